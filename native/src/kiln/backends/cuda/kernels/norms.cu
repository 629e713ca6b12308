// RMSNorm (whole row or per group) and LayerNorm: one block per (row, group), float32 statistics.
#include "kiln/backends/cuda/kernels/common.cuh"
#include "kiln/backends/cuda/kernels/kernels.h"

namespace kiln {
namespace cuda {

namespace {

__global__ void rmsNormKernel(ConstMatrix x, const void* w, DType wDType, int64_t numGroups, int64_t groupSize,
                              float eps, float weightOffset, Matrix y) {
  __shared__ float shared[32];
  const int64_t r = blockIdx.x / numGroups;
  const int64_t g = blockIdx.x % numGroups;
  const int64_t xRow = r * x.stride + g * groupSize;
  const int64_t yRow = r * y.stride + g * groupSize;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < groupSize; i += blockDim.x) {
    const float v = load(x.data, x.dtype, xRow + i);
    sum += v * v;
  }
  sum = blockSum(sum, shared);
  const float inv = 1.0f / sqrtf(sum / static_cast<float>(groupSize) + eps);
  // Each element is read and written by the same thread: y may alias x.
  for (int64_t i = threadIdx.x; i < groupSize; i += blockDim.x) {
    store(y.data, y.dtype, yRow + i, (load(x.data, x.dtype, xRow + i) * inv) * (weightOffset + load(w, wDType, i)));
  }
}

__global__ void layerNormKernel(ConstMatrix x, const void* w, DType wDType, const float* bias, int64_t H, float eps,
                                Matrix y) {
  __shared__ float shared[32];
  const int64_t xRow = blockIdx.x * x.stride;
  const int64_t yRow = blockIdx.x * y.stride;
  // Two passes (mean, then centred squares) as the CPU kernel: no cancellation when |mean| >> std.
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) sum += load(x.data, x.dtype, xRow + i);
  const float mean = blockSum(sum, shared) / static_cast<float>(H);
  float sq = 0.0f;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
    const float d = load(x.data, x.dtype, xRow + i) - mean;
    sq += d * d;
  }
  const float inv = 1.0f / sqrtf(blockSum(sq, shared) / static_cast<float>(H) + eps);
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
    const float n = (load(x.data, x.dtype, xRow + i) - mean) * inv * load(w, wDType, i);
    store(y.data, y.dtype, yRow + i, bias ? n + bias[i] : n);
  }
}

// sum = a + b for the row, each element stored and read back by the same thread (so the norm sees the
// sum as stored, as the unfused ops do); returns nothing, the row of sum is then complete for this block
// after a barrier.
__device__ __forceinline__ void addRow(ConstMatrix a, ConstMatrix b, int64_t r, int64_t H, Matrix sum) {
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
    store(sum.data, sum.dtype, r * sum.stride + i, load(a.data, a.dtype, r * a.stride + i) + load(b.data, b.dtype, r * b.stride + i));
  }
}

__global__ void addRmsNormKernel(ConstMatrix a, ConstMatrix b, int64_t H, const void* w, DType wDType, float eps,
                                 float weightOffset, Matrix sum, Matrix y) {
  const int64_t r = blockIdx.x;
  addRow(a, b, r, H, sum);
  // Each thread reads back only what it wrote: no barrier needed before the norm's first pass.
  __shared__ float shared[32];
  float sq = 0.0f;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
    const float v = load(sum.data, sum.dtype, r * sum.stride + i);
    sq += v * v;
  }
  const float inv = 1.0f / sqrtf(blockSum(sq, shared) / static_cast<float>(H) + eps);
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
    store(y.data, y.dtype, r * y.stride + i, (load(sum.data, sum.dtype, r * sum.stride + i) * inv) * (weightOffset + load(w, wDType, i)));
  }
}

__global__ void addLayerNormKernel(ConstMatrix a, ConstMatrix b, int64_t H, const void* w, DType wDType, const float* bias,
                                   float eps, Matrix sum, Matrix y) {
  const int64_t r = blockIdx.x;
  addRow(a, b, r, H, sum);
  __shared__ float shared[32];
  float total = 0.0f;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) total += load(sum.data, sum.dtype, r * sum.stride + i);
  const float mean = blockSum(total, shared) / static_cast<float>(H);
  float sq = 0.0f;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
    const float d = load(sum.data, sum.dtype, r * sum.stride + i) - mean;
    sq += d * d;
  }
  const float inv = 1.0f / sqrtf(blockSum(sq, shared) / static_cast<float>(H) + eps);
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
    const float n = (load(sum.data, sum.dtype, r * sum.stride + i) - mean) * inv * load(w, wDType, i);
    store(y.data, y.dtype, r * y.stride + i, bias ? n + bias[i] : n);
  }
}

int threadsFor(int64_t n) { return n >= 1024 ? 256 : (n >= 256 ? 128 : 64); }

}  // namespace

void rmsNorm(cudaStream_t stream, ConstMatrix x, int64_t rows, const void* w, DType wDType, int64_t numGroups,
             int64_t groupSize, float eps, float weightOffset, Matrix y) {
  if (rows <= 0 || numGroups <= 0) return;
  rmsNormKernel<<<static_cast<unsigned>(rows * numGroups), threadsFor(groupSize), 0, stream>>>(
      x, w, wDType, numGroups, groupSize, eps, weightOffset, y);
}

void layerNorm(cudaStream_t stream, ConstMatrix x, int64_t rows, const void* w, DType wDType, const float* bias,
               int64_t H, float eps, Matrix y) {
  if (rows <= 0) return;
  layerNormKernel<<<static_cast<unsigned>(rows), threadsFor(H), 0, stream>>>(x, w, wDType, bias, H, eps, y);
}

void addRmsNorm(cudaStream_t stream, ConstMatrix a, ConstMatrix b, int64_t rows, int64_t H, const void* w, DType wDType,
                float eps, float weightOffset, Matrix sum, Matrix y) {
  if (rows <= 0) return;
  addRmsNormKernel<<<static_cast<unsigned>(rows), threadsFor(H), 0, stream>>>(a, b, H, w, wDType, eps, weightOffset, sum, y);
}

void addLayerNorm(cudaStream_t stream, ConstMatrix a, ConstMatrix b, int64_t rows, int64_t H, const void* w,
                  DType wDType, const float* bias, float eps, Matrix sum, Matrix y) {
  if (rows <= 0) return;
  addLayerNormKernel<<<static_cast<unsigned>(rows), threadsFor(H), 0, stream>>>(a, b, H, w, wDType, bias, eps, sum, y);
}

}  // namespace cuda
}  // namespace kiln
