// RMSNorm (whole row or per group) and LayerNorm: one block per (row, group), float32 statistics.
#include <algorithm>

#include "kiln/backends/cuda/kernels/common.cuh"
#include "kiln/backends/cuda/kernels/kernels.h"

namespace kiln {
namespace cuda {

namespace {

__global__ void rmsNormKernel(ConstMatrix x, const void* w, DType wDType, int64_t numGroups, int64_t groupSize,
                              float eps, float weightOffset, Matrix y) {
  startAfterPriorKernels();
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
  startAfterPriorKernels();
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

// The fused residual + norm kernels keep their row in registers: each thread loads its (at most
// kPerThread) elements once, up front, so the loads are all in flight together; a loop that stored and
// re-read global memory would wait on every element in turn (sum may alias nothing, but the compiler
// cannot know). The sum is rounded to its stored dtype (roundTo) before the norm reads it, as the
// unfused ops do.

template <int kPerThread>
__device__ __forceinline__ void addRowToRegisters(ConstMatrix a, ConstMatrix b, int64_t r, int64_t H, Matrix sum,
                                                  float* v) {
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
    v[k] = i < H ? load(a.data, a.dtype, r * a.stride + i) + load(b.data, b.dtype, r * b.stride + i) : 0.0f;
  }
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
    if (i < H) {
      store(sum.data, sum.dtype, r * sum.stride + i, v[k]);
      v[k] = roundTo(sum.dtype, v[k]);
    }
  }
}

template <int kPerThread>
__global__ void addRmsNormKernel(ConstMatrix a, ConstMatrix b, int64_t H, const void* w, DType wDType, float eps,
                                 float weightOffset, Matrix sum, Matrix y) {
  // The norm's weights depend on no kernel: read them while the previous kernel finishes.
  float wv[kPerThread];
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
    wv[k] = i < H ? weightOffset + load(w, wDType, i) : 0.0f;
  }
  startAfterPriorKernels();
  __shared__ float shared[32];
  const int64_t r = blockIdx.x;
  float v[kPerThread];
  addRowToRegisters<kPerThread>(a, b, r, H, sum, v);
  float sq = 0.0f;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) sq += v[k] * v[k];
  const float inv = 1.0f / sqrtf(blockSum(sq, shared) / static_cast<float>(H) + eps);
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
    if (i < H) store(y.data, y.dtype, r * y.stride + i, (v[k] * inv) * wv[k]);
  }
}

template <int kPerThread>
__global__ void addLayerNormKernel(ConstMatrix a, ConstMatrix b, int64_t H, const void* w, DType wDType, const float* bias,
                                   float eps, Matrix sum, Matrix y) {
  startAfterPriorKernels();
  __shared__ float shared[32];
  const int64_t r = blockIdx.x;
  float v[kPerThread];
  addRowToRegisters<kPerThread>(a, b, r, H, sum, v);
  float total = 0.0f;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) total += v[k];
  const float mean = blockSum(total, shared) / static_cast<float>(H);
  float sq = 0.0f;
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
    const float d = i < H ? v[k] - mean : 0.0f;
    sq += d * d;
  }
  const float inv = 1.0f / sqrtf(blockSum(sq, shared) / static_cast<float>(H) + eps);
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int64_t i = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
    if (i < H) {
      const float n = (v[k] - mean) * inv * load(w, wDType, i);
      store(y.data, y.dtype, r * y.stride + i, bias ? n + bias[i] : n);
    }
  }
}

constexpr int kRowElementsPerThread = 8;
constexpr int64_t kMaxFusedRow = 1024 * kRowElementsPerThread;  // 8192 features

// Threads for a row of H held kRowElementsPerThread to a thread: a multiple of 32, at most 1024.
int rowThreads(int64_t H) {
  const int64_t t = (H + kRowElementsPerThread - 1) / kRowElementsPerThread;
  return static_cast<int>(std::min<int64_t>(1024, std::max<int64_t>(32, (t + 31) / 32 * 32)));
}

int threadsFor(int64_t n) { return n >= 1024 ? 256 : (n >= 256 ? 128 : 64); }

}  // namespace

void rmsNorm(cudaStream_t stream, ConstMatrix x, int64_t rows, const void* w, DType wDType, int64_t numGroups,
             int64_t groupSize, float eps, float weightOffset, Matrix y) {
  if (rows <= 0 || numGroups <= 0) return;
  launch(rmsNormKernel, dim3(static_cast<unsigned>(rows * numGroups)), dim3(threadsFor(groupSize)), 0, stream,  x, w, wDType, numGroups, groupSize, eps, weightOffset, y);
}

void layerNorm(cudaStream_t stream, ConstMatrix x, int64_t rows, const void* w, DType wDType, const float* bias,
               int64_t H, float eps, Matrix y) {
  if (rows <= 0) return;
  launch(layerNormKernel, dim3(static_cast<unsigned>(rows)), dim3(threadsFor(H)), 0, stream, x, w, wDType, bias, H, eps, y);
}

void addRmsNorm(cudaStream_t stream, ConstMatrix a, ConstMatrix b, int64_t rows, int64_t H, const void* w, DType wDType,
                float eps, float weightOffset, Matrix sum, Matrix y) {
  if (rows <= 0) return;
  if (H > kMaxFusedRow) {  // wider than a block holds in registers: the two kernels one after the other
    elementwise(stream, Elementwise::Add, a, b, rows, H, 0.0f, sum);
    return rmsNorm(stream, sum, rows, w, wDType, 1, H, eps, weightOffset, y);
  }
  launch(addRmsNormKernel<kRowElementsPerThread>, dim3(static_cast<unsigned>(rows)), dim3(rowThreads(H)), 0, stream,  a, b, H, w, wDType, eps, weightOffset, sum, y);
}

void addLayerNorm(cudaStream_t stream, ConstMatrix a, ConstMatrix b, int64_t rows, int64_t H, const void* w,
                  DType wDType, const float* bias, float eps, Matrix sum, Matrix y) {
  if (rows <= 0) return;
  if (H > kMaxFusedRow) {
    elementwise(stream, Elementwise::Add, a, b, rows, H, 0.0f, sum);
    return layerNorm(stream, sum, rows, w, wDType, bias, H, eps, y);
  }
  launch(addLayerNormKernel<kRowElementsPerThread>, dim3(static_cast<unsigned>(rows)), dim3(rowThreads(H)), 0, stream,  a, b, H, w, wDType, bias, eps, sum, y);
}

}  // namespace cuda
}  // namespace kiln
