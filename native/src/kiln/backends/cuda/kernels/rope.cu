// Rotary position embedding: one block per token, one thread per (head, pair). The angle is the float32
// product position * invFreq, its cos/sin taken in double and rounded to float32, as the CPU kernel
// (and transformers) do. Those cos/sin values are looked up in a table made once on the host when the
// engine loads (ops/rope.cpp, for positions below maxSeqLen), as TensorRT-LLM's rotary cos/sin cache:
// double-precision trigonometry on every step was most of this kernel's time.
#include "kiln/backends/cuda/kernels/common.cuh"
#include "kiln/backends/cuda/kernels/kernels.h"

namespace kiln {
namespace cuda {

namespace {

// The cos/sin of a (token, frequency) pair are computed once into shared memory, then applied to every
// head (the double-precision trigonometry is the costly part).
constexpr int kMaxHalf = 256;  // rotaryDim <= 512

__global__ void ropeKernel(ConstMatrix x, const int32_t* positions, int64_t numHeads, int64_t headDim, int64_t rotaryDim,
                           bool interleaved, const float* invFreq, float attentionScaling, const float* cosSin,
                           int64_t tablePositions, Matrix y) {
  startAfterPriorKernels();
  __shared__ float cosTable[kMaxHalf], sinTable[kMaxHalf];
  const int64_t t = blockIdx.x;
  const int64_t half = rotaryDim / 2;
  const float pos = static_cast<float>(positions[t]);
  const bool tabled = cosSin != nullptr && positions[t] >= 0 && positions[t] < tablePositions;
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    if (tabled) {
      const float2 cs = reinterpret_cast<const float2*>(cosSin)[positions[t] * half + i];
      cosTable[i] = cs.x;
      sinTable[i] = cs.y;
    } else {
      const float angle = pos * invFreq[i];
      cosTable[i] = static_cast<float>(cos(static_cast<double>(angle))) * attentionScaling;
      sinTable[i] = static_cast<float>(sin(static_cast<double>(angle))) * attentionScaling;
    }
  }
  __syncthreads();
  const int64_t xt = t * x.stride, yt = t * y.stride;
  // Four (head, pair) tasks per thread at a time: all their loads are issued before any store (y may
  // alias x, so the compiler would otherwise wait on each load in turn; the tasks' elements are disjoint).
  constexpr int kBatch = 4;
  const int64_t tasks = numHeads * half;
  for (int64_t base = threadIdx.x; base < tasks; base += kBatch * blockDim.x) {
    float a[kBatch], b[kBatch];
    int64_t i1[kBatch], i2[kBatch];
    int64_t pair[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int64_t task = base + static_cast<int64_t>(u) * blockDim.x;
      if (task >= tasks) break;
      const int64_t h = task / half, i = task % half;
      pair[u] = i;
      i1[u] = h * headDim + (interleaved ? 2 * i : i);
      i2[u] = h * headDim + (interleaved ? 2 * i + 1 : i + half);
      a[u] = load(x.data, x.dtype, xt + i1[u]);
      b[u] = load(x.data, x.dtype, xt + i2[u]);
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int64_t task = base + static_cast<int64_t>(u) * blockDim.x;
      if (task >= tasks) break;
      const float c = cosTable[pair[u]], sn = sinTable[pair[u]];
      store(y.data, y.dtype, yt + i1[u], a[u] * c - b[u] * sn);
      store(y.data, y.dtype, yt + i2[u], b[u] * c + a[u] * sn);
    }
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
          int64_t headDim, int64_t rotaryDim, bool interleaved, const float* invFreq, float attentionScaling,
          const float* cosSin, int64_t tablePositions, Matrix y) {
  if (numTokens <= 0) return;
  if (rotaryDim / 2 > kMaxHalf) throw std::runtime_error("cuda rope: rotaryDim above 512");
  launch(ropeKernel, dim3(static_cast<unsigned>(numTokens)), dim3(128), 0, stream, x, positions, numHeads, headDim, rotaryDim, interleaved, invFreq, attentionScaling, cosSin, tablePositions, y);
}

}  // namespace cuda
}  // namespace kiln
