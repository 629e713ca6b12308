// gather_rows: the step's logit rows out of the token rows (the LM head runs only over them).
#include "kiln/backends/cuda/kernels/common.cuh"
#include "kiln/backends/cuda/kernels/kernels.h"

namespace kiln {
namespace cuda {

namespace {

__global__ void gatherRowsKernel(ConstMatrix x, const int32_t* rows, int64_t cols, Matrix out) {
  startAfterPriorKernels();
  const int64_t src = static_cast<int64_t>(rows[blockIdx.x]) * x.stride;
  const int64_t dst = blockIdx.x * out.stride;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) store(out.data, out.dtype, dst + c, load(x.data, x.dtype, src + c));
}

}  // namespace

void gatherRows(cudaStream_t stream, ConstMatrix x, const int32_t* rows, int64_t numRows, int64_t cols, Matrix out) {
  if (numRows <= 0) return;
  launch(gatherRowsKernel, dim3(static_cast<unsigned>(numRows)), dim3(256), 0, stream, x, rows, cols, out);
}

}  // namespace cuda
}  // namespace kiln
