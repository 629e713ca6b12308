// embedding and position_embedding: one block per token, threads along the row.
#include "kiln/backends/cuda/kernels/common.cuh"
#include "kiln/backends/cuda/kernels/kernels.h"

namespace kiln {
namespace cuda {

namespace {

// out[t] = table[index[t] + offset] * scale, or zeros where index[t] + offset falls outside [0, tableRows)
// (a vocabulary slice: the ids of other ranks; ids and positions are checked on the host before).
__global__ void gatherScaled(const int32_t* index, int64_t offset, int64_t tableRows, const void* table, DType tableDType,
                             int64_t hidden, float scale, Matrix out) {
  startAfterPriorKernels();
  const int64_t t = blockIdx.x;
  const int64_t local = static_cast<int64_t>(index[t]) + offset;
  const bool inside = local >= 0 && local < tableRows;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) {
    store(out.data, out.dtype, t * out.stride + i, inside ? load(table, tableDType, local * hidden + i) * scale : 0.0f);
  }
}

}  // namespace

void embedding(cudaStream_t stream, const int32_t* ids, int64_t numTokens, const void* table, DType tableDType,
               int64_t hidden, float scale, Matrix out) {
  if (numTokens <= 0) return;
  launch(gatherScaled, dim3(static_cast<unsigned>(numTokens)), dim3(256), 0, stream, ids, int64_t{0}, INT64_MAX, table, tableDType,
         hidden, scale, out);
}

void vocabSliceEmbedding(cudaStream_t stream, const int32_t* ids, int64_t numTokens, int64_t vocabStart, int64_t rows,
                         const void* table, DType tableDType, int64_t hidden, float scale, Matrix out) {
  if (numTokens <= 0) return;
  launch(gatherScaled, dim3(static_cast<unsigned>(numTokens)), dim3(256), 0, stream, ids, -vocabStart, rows, table, tableDType,
         hidden, scale, out);
}

void positionEmbedding(cudaStream_t stream, const int32_t* positions, int64_t numTokens, int64_t offset,
                       const void* table, DType tableDType, int64_t hidden, Matrix out) {
  if (numTokens <= 0) return;
  launch(gatherScaled, dim3(static_cast<unsigned>(numTokens)), dim3(256), 0, stream, positions, offset, INT64_MAX, table, tableDType,
         hidden, 1.0f, out);
}

}  // namespace cuda
}  // namespace kiln
