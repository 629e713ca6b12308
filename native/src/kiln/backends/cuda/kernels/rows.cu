// gather_rows (the LM head's rows), and the float32 conversions around the logits and MoE accumulators.
#include "kiln/backends/cuda/kernels/common.cuh"
#include "kiln/backends/cuda/kernels/kernels.h"

namespace kiln {
namespace cuda {

namespace {

template <typename T>
__global__ void gatherRowsKernel(const T* x, int64_t xStride, const int32_t* rows, int64_t cols, T* out, int64_t outStride) {
  const T* src = x + static_cast<int64_t>(rows[blockIdx.x]) * xStride;
  T* dst = out + blockIdx.x * outStride;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = src[c];
}

template <typename T>
__global__ void toFloat32Kernel(const T* x, int64_t xStride, int64_t cols, float* out) {
  const T* src = x + blockIdx.y * xStride;
  float* dst = out + blockIdx.y * cols;
  for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; c < cols;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dst[c] = toF(src[c]);
  }
}

template <typename T>
__global__ void fromFloat32Kernel(const float* acc, int64_t cols, T* out, int64_t outStride) {
  const float* src = acc + blockIdx.x * cols;
  T* dst = out + blockIdx.x * outStride;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = fromF<T>(src[c]);
}

}  // namespace

void gatherRows(cudaStream_t stream, DType t, const void* x, int64_t xStride, const int32_t* rows, int64_t numRows,
                int64_t cols, void* out, int64_t outStride) {
  if (numRows <= 0) return;
  dispatch(t, [&](auto z) {
    using T = decltype(z);
    gatherRowsKernel<T><<<static_cast<unsigned>(numRows), 256, 0, stream>>>(static_cast<const T*>(x), xStride, rows, cols,
                                                                           static_cast<T*>(out), outStride);
  });
}

void toFloat32(cudaStream_t stream, DType t, const void* x, int64_t rows, int64_t xStride, int64_t cols, float* out) {
  if (rows <= 0) return;
  dispatch(t, [&](auto z) {
    using T = decltype(z);
    const dim3 grid(blocksFor(cols, 256) > 64 ? 64 : blocksFor(cols, 256), static_cast<unsigned>(rows));
    toFloat32Kernel<T><<<grid, 256, 0, stream>>>(static_cast<const T*>(x), xStride, cols, out);
  });
}

void fromFloat32(cudaStream_t stream, DType t, const float* acc, int64_t rows, int64_t cols, void* out, int64_t outStride) {
  if (rows <= 0) return;
  dispatch(t, [&](auto z) {
    using T = decltype(z);
    fromFloat32Kernel<T><<<static_cast<unsigned>(rows), 256, 0, stream>>>(acc, cols, static_cast<T*>(out), outStride);
  });
}

}  // namespace cuda
}  // namespace kiln
