#pragma once
// The CUDA backend's sampler: the executor's sampled rows drawn on the device, where the logits are,
// with the CPU sampler's semantics (kiln/sampling). Per step the host turns each row's
// sequence-dependent controls into sparse edits (collectSparseControls) and draws its uniform, uploads
// all of it at once, and the kernel (kernels/sampling.cu) writes each row's SampleOutput, which comes
// back in one small copy instead of [rows, vocab] float32 logits.
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "kiln/backends/cuda/kernels/sampling.h"
#include "kiln/runtime/backend.h"

namespace kiln {
namespace cuda {

class DeviceSampler {
 public:
  DeviceSampler() = default;
  DeviceSampler(const DeviceSampler&) = delete;
  DeviceSampler& operator=(const DeviceSampler&) = delete;
  ~DeviceSampler();

  // Stages `plan`, then enqueues its upload, the kernel over `logits` ([rows, vocab] float32, processed
  // in place) and the download of the outputs on `stream`. The host work overlaps whatever the stream
  // is still running. The buffers of an earlier call must be idle (its stream synchronized).
  void enqueue(cudaStream_t stream, float* logits, int64_t vocab, const StepSampling& plan);
  // After the stream is synchronized: the outputs into plan.out.
  void finish(const StepSampling& plan) const;

 private:
  void reserve(size_t stageBytes, size_t outputBytes);

  std::vector<sampling::SparseControls> controls_;
  std::vector<DeviceSampleRow> rows_;
  std::vector<int32_t> ints_;
  std::vector<float> floats_;
  std::vector<uint32_t> masks_;
  // Pinned host and device copies of [rows][ints][floats][mask words], and of the outputs.
  char* hostStage_ = nullptr;
  char* deviceStage_ = nullptr;
  size_t stageCapacity_ = 0;
  sampling::SampleOutput* hostOutputs_ = nullptr;
  sampling::SampleOutput* deviceOutputs_ = nullptr;
  size_t outputCapacity_ = 0;
};

// backend.h's sampleRowsOnCuda: each row's logits uploaded, drawn by a DeviceSampler on its own stream.
void sampleRowsForTest(const sampling::SampleRow* rows, int64_t numRows, int64_t vocab, sampling::SampleOutput* out);

}  // namespace cuda
}  // namespace kiln
