// embedding and position_embedding: one block per token, threads along the row.
#include "kiln/backends/cuda/kernels/common.cuh"
#include "kiln/backends/cuda/kernels/kernels.h"

namespace kiln {
namespace cuda {

namespace {

__global__ void gatherScaled(const int32_t* index, int64_t offset, const void* table, DType tableDType, int64_t hidden,
                             float scale, Matrix out) {
  startAfterPriorKernels();
  const int64_t t = blockIdx.x;
  const int64_t row = (static_cast<int64_t>(index[t]) + offset) * hidden;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) {
    store(out.data, out.dtype, t * out.stride + i, load(table, tableDType, row + i) * scale);
  }
}

}  // namespace

void embedding(cudaStream_t stream, const int32_t* ids, int64_t numTokens, const void* table, DType tableDType,
               int64_t hidden, float scale, Matrix out) {
  if (numTokens <= 0) return;
  launch(gatherScaled, dim3(static_cast<unsigned>(numTokens)), dim3(256), 0, stream, ids, 0, table, tableDType, hidden, scale, out);
}

void positionEmbedding(cudaStream_t stream, const int32_t* positions, int64_t numTokens, int64_t offset,
                       const void* table, DType tableDType, int64_t hidden, Matrix out) {
  if (numTokens <= 0) return;
  launch(gatherScaled, dim3(static_cast<unsigned>(numTokens)), dim3(256), 0, stream, positions, offset, table, tableDType, hidden, 1.0f, out);
}

}  // namespace cuda
}  // namespace kiln
