#pragma once
// Shared by the attention kernels (attention.cu, attention_decode.cu): the paged KV cache's addressing,
// and the grouped decode kernel's entry point.
#include <cuda_runtime.h>

#include <cstdint>

#include "kiln/backends/cuda/kernels/kernels.h"

namespace kiln {
namespace cuda {

// Where a K (which 0) or V (1) row of a layer and position lives (device_step.h's DeviceKv layout).
struct PagedCache {
  int64_t numLayers, tokensPerBlock, rowSize, blockStride;
  template <typename T>
  __device__ __forceinline__ T* row(T* pool, const int32_t* table, int64_t layer, int64_t pos, int which) const {
    const int64_t block = table[pos / tokensPerBlock];
    return pool + ((block * numLayers + layer) * 2 + which) * blockStride + (pos % tokensPerBlock) * rowSize;
  }
};

// Whether attendDecode takes these heads: head dims 64 and 128, 1, 2, 4 or 8 query heads per KV head.
bool groupedDecodeApplies(int64_t headDim, int64_t group);
// Decode attention (one token per sequence, its K and V already stored) grouped by KV head, with
// split-K when `split` asks for it (attention_decode.cu).
void attendDecode(cudaStream_t stream, DType cacheDType, const DeviceStep& step, const void* pool, PagedCache cache,
                  int64_t layer, ConstMatrix q, int64_t numHeads, int64_t numKvHeads, int64_t headDim, float scale,
                  int64_t slidingWindow, float softcap, const float* alibiSlopes, Matrix out, const AttentionSplit& split);

}  // namespace cuda
}  // namespace kiln
