#pragma once
// The device sampler's kernel (sampling.cu): one block per row draws the next token from the step's
// float32 logits with the CPU sampler's semantics. The rows' controls are staged by the host
// (backends/cuda/device_sampler.cpp) into one upload: a DeviceSampleRow per row, and the sparse lists
// they point into (`ints`, `floats`, token-mask words).
#include <cuda_runtime.h>

#include <cstdint>

#include "kiln/sampling/sampling.h"

namespace kiln {
namespace cuda {

struct DeviceSampleRow {
  int32_t logitRow;  // row of the step's float32 logits (processed in place)
  float temperature;
  int32_t topK;
  float topP;
  float minP;
  float repetitionPenalty;
  float presencePenalty;
  float frequencyPenalty;
  int32_t logprobs;
  int32_t wantLogprob;
  double uniform;  // kiln::sampling::uniform(seed, step, sequenceIndex), drawn on the host
  // Offsets into `ints` / `floats` of the row's SparseControls, and their lengths.
  int32_t biasIdsAt, biasValuesAt, biasCount;
  int32_t repetitionIdsAt, repetitionCount;
  int32_t countIdsAt, countsAt, countCount;
  int32_t bannedIdsAt, bannedCount;
  int64_t maskWordsAt;  // -1: no token mask; else the row's first word in `masks`
};

// Draws rows[0..numRows) (their outputs in out[0..numRows)); enqueued on `stream`.
void sampleRows(cudaStream_t stream, float* logits, int64_t vocab, const DeviceSampleRow* rows, int64_t numRows,
                const int32_t* ints, const float* floats, const uint32_t* masks, sampling::SampleOutput* out);

}  // namespace cuda
}  // namespace kiln
