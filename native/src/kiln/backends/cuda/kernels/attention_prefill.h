#pragma once
// Prefill and mixed-step attention on tensor cores with mma.sync (attention_prefill.cu), the default in
// place of attention.cu's WMMA attendTiled where it applies; KILN_CUDA_PREFILL_ATTENTION picks between them.
#include <cuda_runtime.h>

#include <cstdint>

#include "kiln/backends/cuda/kernels/attention_decode.h"
#include "kiln/backends/cuda/kernels/kernels.h"

namespace kiln {
namespace cuda {

// Whether steps that attendTiled would take go to attendPrefill instead: KILN_CUDA_PREFILL_ATTENTION
// unset or "mma" (the default), not when it is "wmma" (attendTiled, for comparisons or as a way out
// without a rebuild). Read once; any other value throws.
bool prefillMmaSelected();

// Whether attendPrefill covers these heads: 16-bit caches, head dims 64 and 128, no softcap, no ALiBi
// (those stay on attendTiled).
bool prefillMmaApplies(DType cacheDType, int64_t headDim, float softcap, const float* alibiSlopes);

// Causal attention (sliding window when slidingWindow > 0) of every token of the step over its
// sequence's cached keys, the step's own K and V rows already stored. Same tiles, rows and grid as
// attendTiled: one block per (query tile, KV head, part of the tile) and 64 rows of (token, query head)
// pairs per block; `group` query heads per KV head, at most 64.
void attendPrefill(cudaStream_t stream, DType cacheDType, const DeviceStep& step, const void* pool, PagedCache cache,
                   int64_t layer, ConstMatrix q, int64_t numKvHeads, int64_t group, int64_t headDim, float scale,
                   int64_t slidingWindow, Matrix out);

}  // namespace cuda
}  // namespace kiln
