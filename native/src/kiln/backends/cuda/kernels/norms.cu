// RMSNorm (whole row or per group) and LayerNorm: one block per (row, group), float32 statistics.
#include "kiln/backends/cuda/kernels/common.cuh"
#include "kiln/backends/cuda/kernels/kernels.h"

namespace kiln {
namespace cuda {

namespace {

template <typename T>
__global__ void rmsNormKernel(const T* x, int64_t xStride, const T* w, int64_t numGroups, int64_t groupSize, float eps,
                              float weightOffset, T* y, int64_t yStride) {
  __shared__ float shared[32];
  const int64_t r = blockIdx.x / numGroups;
  const int64_t g = blockIdx.x % numGroups;
  const T* xr = x + r * xStride + g * groupSize;
  T* yr = y + r * yStride + g * groupSize;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < groupSize; i += blockDim.x) {
    const float v = toF(xr[i]);
    sum += v * v;
  }
  sum = blockSum(sum, shared);
  const float inv = 1.0f / sqrtf(sum / static_cast<float>(groupSize) + eps);
  // Every thread has read its elements of x before the block sum's barrier: y may alias x.
  for (int64_t i = threadIdx.x; i < groupSize; i += blockDim.x) {
    yr[i] = fromF<T>((toF(xr[i]) * inv) * (weightOffset + toF(w[i])));
  }
}

template <typename T>
__global__ void layerNormKernel(const T* x, int64_t xStride, const T* w, const float* bias, int64_t H, float eps, T* y,
                                int64_t yStride) {
  __shared__ float shared[32];
  const T* xr = x + blockIdx.x * xStride;
  T* yr = y + blockIdx.x * yStride;
  // Two passes (mean, then centred squares) as the CPU kernel: no cancellation when |mean| >> std.
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) sum += toF(xr[i]);
  const float mean = blockSum(sum, shared) / static_cast<float>(H);
  float sq = 0.0f;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
    const float d = toF(xr[i]) - mean;
    sq += d * d;
  }
  const float inv = 1.0f / sqrtf(blockSum(sq, shared) / static_cast<float>(H) + eps);
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
    const float n = (toF(xr[i]) - mean) * inv * toF(w[i]);
    yr[i] = fromF<T>(bias ? n + bias[i] : n);
  }
}

int threadsFor(int64_t n) { return n >= 1024 ? 256 : (n >= 256 ? 128 : 64); }

}  // namespace

void rmsNorm(cudaStream_t stream, DType t, const void* x, int64_t rows, int64_t xStride, const void* w,
             int64_t numGroups, int64_t groupSize, float eps, float weightOffset, void* y, int64_t yStride) {
  if (rows <= 0 || numGroups <= 0) return;
  dispatch(t, [&](auto z) {
    using T = decltype(z);
    rmsNormKernel<T><<<static_cast<unsigned>(rows * numGroups), threadsFor(groupSize), 0, stream>>>(
        static_cast<const T*>(x), xStride, static_cast<const T*>(w), numGroups, groupSize, eps, weightOffset,
        static_cast<T*>(y), yStride);
  });
}

void layerNorm(cudaStream_t stream, DType t, const void* x, int64_t rows, int64_t xStride, const void* w,
               const float* bias, int64_t H, float eps, void* y, int64_t yStride) {
  if (rows <= 0) return;
  dispatch(t, [&](auto z) {
    using T = decltype(z);
    layerNormKernel<T><<<static_cast<unsigned>(rows), threadsFor(H), 0, stream>>>(
        static_cast<const T*>(x), xStride, static_cast<const T*>(w), bias, H, eps, static_cast<T*>(y), yStride);
  });
}

}  // namespace cuda
}  // namespace kiln
