// Rotary position embedding: one block per token, one thread per (head, pair). The angle is the float32
// product position * invFreq, its cos/sin taken in double and rounded to float32, as the CPU kernel
// (and transformers) do.
#include "kiln/backends/cuda/kernels/common.cuh"
#include "kiln/backends/cuda/kernels/kernels.h"

namespace kiln {
namespace cuda {

namespace {

// The cos/sin of a (token, frequency) pair are computed once into shared memory, then applied to every
// head (the double-precision trigonometry is the costly part).
constexpr int kMaxHalf = 256;  // rotaryDim <= 512

__global__ void ropeKernel(ConstMatrix x, const int32_t* positions, int64_t numHeads, int64_t headDim, int64_t rotaryDim,
                           bool interleaved, const float* invFreq, float attentionScaling, Matrix y) {
  __shared__ float cosTable[kMaxHalf], sinTable[kMaxHalf];
  const int64_t t = blockIdx.x;
  const int64_t half = rotaryDim / 2;
  const float pos = static_cast<float>(positions[t]);
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    const float angle = pos * invFreq[i];
    cosTable[i] = static_cast<float>(cos(static_cast<double>(angle))) * attentionScaling;
    sinTable[i] = static_cast<float>(sin(static_cast<double>(angle))) * attentionScaling;
  }
  __syncthreads();
  const int64_t xt = t * x.stride, yt = t * y.stride;
  for (int64_t task = threadIdx.x; task < numHeads * half; task += blockDim.x) {
    const int64_t h = task / half, i = task % half;
    const float c = cosTable[i], s = sinTable[i];
    const int64_t i1 = h * headDim + (interleaved ? 2 * i : i);
    const int64_t i2 = h * headDim + (interleaved ? 2 * i + 1 : i + half);
    const float a = load(x.data, x.dtype, xt + i1), b = load(x.data, x.dtype, xt + i2);  // both read first: y may alias x
    store(y.data, y.dtype, yt + i1, a * c - b * s);
    store(y.data, y.dtype, yt + i2, b * c + a * s);
  }
  const int64_t rest = headDim - 2 * half;
  if (rest > 0 && (x.data != y.data || x.stride != y.stride || x.dtype != y.dtype)) {
    for (int64_t task = threadIdx.x; task < numHeads * rest; task += blockDim.x) {
      const int64_t d = (task / rest) * headDim + 2 * half + task % rest;
      store(y.data, y.dtype, yt + d, load(x.data, x.dtype, xt + d));
    }
  }
}

}  // namespace

void rope(cudaStream_t stream, ConstMatrix x, int64_t numTokens, const int32_t* positions, int64_t numHeads,
          int64_t headDim, int64_t rotaryDim, bool interleaved, const float* invFreq, float attentionScaling, Matrix y) {
  if (numTokens <= 0) return;
  if (rotaryDim / 2 > kMaxHalf) throw std::runtime_error("cuda rope: rotaryDim above 512");
  ropeKernel<<<static_cast<unsigned>(numTokens), 128, 0, stream>>>(x, positions, numHeads, headDim, rotaryDim,
                                                                    interleaved, invFreq, attentionScaling, y);
}

}  // namespace cuda
}  // namespace kiln
