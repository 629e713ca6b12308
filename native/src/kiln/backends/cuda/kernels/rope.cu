// Rotary position embedding: one block per token, one thread per (head, pair). The angle is the float32
// product position * invFreq, its cos/sin taken in double and rounded to float32, as the CPU kernel
// (and transformers) do.
#include "kiln/backends/cuda/kernels/common.cuh"
#include "kiln/backends/cuda/kernels/kernels.h"

namespace kiln {
namespace cuda {

namespace {

template <typename T>
__global__ void ropeKernel(const T* x, int64_t xStride, const int32_t* positions, int64_t numHeads, int64_t headDim,
                           int64_t rotaryDim, bool interleaved, const float* invFreq, float attentionScaling, T* y,
                           int64_t yStride) {
  const int64_t t = blockIdx.x;
  const int64_t half = rotaryDim / 2;
  const float pos = static_cast<float>(positions[t]);
  const T* xt = x + t * xStride;
  T* yt = y + t * yStride;
  for (int64_t task = threadIdx.x; task < numHeads * half; task += blockDim.x) {
    const int64_t h = task / half, i = task % half;
    const float angle = pos * invFreq[i];
    const float c = static_cast<float>(cos(static_cast<double>(angle))) * attentionScaling;
    const float s = static_cast<float>(sin(static_cast<double>(angle))) * attentionScaling;
    const int64_t i1 = h * headDim + (interleaved ? 2 * i : i);
    const int64_t i2 = h * headDim + (interleaved ? 2 * i + 1 : i + half);
    const float a = toF(xt[i1]), b = toF(xt[i2]);  // both read before either is written: y may alias x
    yt[i1] = fromF<T>(a * c - b * s);
    yt[i2] = fromF<T>(b * c + a * s);
  }
  if (yt != xt) {
    const int64_t rest = headDim - 2 * half;
    for (int64_t task = threadIdx.x; task < numHeads * rest; task += blockDim.x) {
      const int64_t d = (task / rest) * headDim + 2 * half + task % rest;
      yt[d] = xt[d];
    }
  }
}

}  // namespace

void rope(cudaStream_t stream, DType t, const void* x, int64_t numTokens, int64_t xStride, const int32_t* positions,
          int64_t numHeads, int64_t headDim, int64_t rotaryDim, bool interleaved, const float* invFreq,
          float attentionScaling, void* y, int64_t yStride) {
  if (numTokens <= 0) return;
  dispatch(t, [&](auto z) {
    using T = decltype(z);
    ropeKernel<T><<<static_cast<unsigned>(numTokens), 128, 0, stream>>>(
        static_cast<const T*>(x), xStride, positions, numHeads, headDim, rotaryDim, interleaved, invFreq,
        attentionScaling, static_cast<T*>(y), yStride);
  });
}

}  // namespace cuda
}  // namespace kiln
