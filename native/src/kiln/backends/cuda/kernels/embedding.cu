// embedding and position_embedding: one block per token, threads along the row.
#include "kiln/backends/cuda/kernels/common.cuh"
#include "kiln/backends/cuda/kernels/kernels.h"

namespace kiln {
namespace cuda {

namespace {

template <typename T>
__global__ void gatherScaled(const int32_t* index, int64_t offset, const T* table, int64_t hidden, float scale, T* out,
                             int64_t outStride) {
  const int64_t t = blockIdx.x;
  const T* row = table + (static_cast<int64_t>(index[t]) + offset) * hidden;
  T* o = out + t * outStride;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) {
    o[i] = scale == 1.0f ? row[i] : fromF<T>(toF(row[i]) * scale);
  }
}

}  // namespace

void embedding(cudaStream_t stream, DType t, const int32_t* ids, int64_t numTokens, const void* table, int64_t hidden,
               float scale, void* out, int64_t outStride) {
  if (numTokens <= 0) return;
  dispatch(t, [&](auto z) {
    using T = decltype(z);
    gatherScaled<T><<<static_cast<unsigned>(numTokens), 256, 0, stream>>>(
        ids, 0, static_cast<const T*>(table), hidden, scale, static_cast<T*>(out), outStride);
  });
}

void positionEmbedding(cudaStream_t stream, DType t, const int32_t* positions, int64_t numTokens, int64_t offset,
                       const void* table, int64_t hidden, void* out, int64_t outStride) {
  if (numTokens <= 0) return;
  dispatch(t, [&](auto z) {
    using T = decltype(z);
    gatherScaled<T><<<static_cast<unsigned>(numTokens), 256, 0, stream>>>(
        positions, offset, static_cast<const T*>(table), hidden, 1.0f, static_cast<T*>(out), outStride);
  });
}

}  // namespace cuda
}  // namespace kiln
