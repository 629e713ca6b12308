// Paged attention over packed variable-length sequences. First every token's K and V rows are stored
// into its sequence's blocks (so a prefill chunk attends to itself); then one block per (token, query
// head) walks that sequence's cached positions with an online softmax (flash-attention's running max
// and sum) in float32, its warps taking interleaved keys (see attend).
#include "kiln/backends/cuda/kernels/common.cuh"
#include "kiln/backends/cuda/kernels/kernels.h"

namespace kiln {
namespace cuda {

namespace {

constexpr int kThreads = 512;  // 16 warps: at batch 1 a layer has only numHeads blocks to spread
constexpr int kMaxHeadDim = 512;

struct Cache {
  int64_t numLayers, tokensPerBlock, rowSize, blockStride;
  template <typename T>
  __device__ __forceinline__ T* row(T* pool, const int32_t* table, int64_t layer, int64_t pos, int which) const {
    const int64_t block = table[pos / tokensPerBlock];
    return pool + ((block * numLayers + layer) * 2 + which) * blockStride + (pos % tokensPerBlock) * rowSize;
  }
};

template <typename T>
__global__ void storeKv(DeviceStep step, T* pool, Cache cache, int64_t layer, ConstMatrix k, ConstMatrix v) {
  const int64_t t = blockIdx.x;
  const int32_t* table = step.blockTables + static_cast<int64_t>(step.tokenSeq[t]) * step.blockTableStride;
  T* kr = cache.row(pool, table, layer, step.positions[t], 0);
  T* vr = cache.row(pool, table, layer, step.positions[t], 1);
  for (int64_t i = threadIdx.x; i < cache.rowSize; i += blockDim.x) {
    kr[i] = fromF<T>(load(k.data, k.dtype, t * k.stride + i));
    vr[i] = fromF<T>(load(v.data, v.dtype, t * v.stride + i));
  }
}

// One block per (token, query head), kWarps warps. Each warp takes every kWarps-th key of the window:
// its lanes split the head's features (lane, lane + 32, ...), so a key's K and V rows are read as whole
// coalesced rows and the score is one warp reduction. Each warp keeps its own running max, sum and
// output (online softmax, as flash-decoding's splits); the block merges the warps' partials at the end.
template <typename T, int kDimsPerLane>
__global__ void __launch_bounds__(kThreads) attend(DeviceStep step, const T* pool, Cache cache, int64_t layer,
                                                   ConstMatrix q, int64_t group, int64_t headDim, float scale,
                                                   int64_t slidingWindow, float softcap, const float* alibiSlopes,
                                                   Matrix out) {
  constexpr int kWarps = kThreads / 32;
  __shared__ float partialMax[kWarps], partialSum[kWarps];
  __shared__ float partialOut[kWarps][kDimsPerLane * 32];
  const int64_t t = blockIdx.x;
  const int64_t h = blockIdx.y;
  const int64_t kvOffset = (h / group) * headDim;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t pos = step.positions[t];
  const int64_t lo = slidingWindow > 0 ? max(int64_t(0), pos - slidingWindow + 1) : 0;
  const int32_t* table = step.blockTables + static_cast<int64_t>(step.tokenSeq[t]) * step.blockTableStride;
  const float slope = alibiSlopes ? alibiSlopes[h] : 0.0f;

  float qv[kDimsPerLane], acc[kDimsPerLane];
#pragma unroll
  for (int i = 0; i < kDimsPerLane; ++i) {
    const int64_t d = lane + 32 * i;
    qv[i] = d < headDim ? load(q.data, q.dtype, t * q.stride + h * headDim + d) : 0.0f;
    acc[i] = 0.0f;
  }
  float runningMax = -INFINITY, runningSum = 0.0f;
  for (int64_t j = lo + warp; j <= pos; j += kWarps) {
    const T* kr = cache.row(pool, table, layer, j, 0) + kvOffset;
    const T* vr = cache.row(pool, table, layer, j, 1) + kvOffset;
    float dot = 0.0f, vv[kDimsPerLane];
#pragma unroll
    for (int i = 0; i < kDimsPerLane; ++i) {
      const int64_t d = lane + 32 * i;
      const bool in = d < headDim;
      dot += in ? qv[i] * toF(kr[d]) : 0.0f;
      vv[i] = in ? toF(vr[d]) : 0.0f;
    }
    float s = scale * warpSum(dot);
    if (softcap > 0.0f) s = softcap * tanhf(s / softcap);
    if (alibiSlopes) s += slope * static_cast<float>(j);
    const float newMax = fmaxf(runningMax, s);
    const float correction = expf(runningMax - newMax);  // 0 on the warp's first key
    const float p = expf(s - newMax);
    runningSum = runningSum * correction + p;
#pragma unroll
    for (int i = 0; i < kDimsPerLane; ++i) acc[i] = acc[i] * correction + p * vv[i];
    runningMax = newMax;
  }
  if (lane == 0) {
    partialMax[warp] = runningMax;
    partialSum[warp] = runningSum;
  }
#pragma unroll
  for (int i = 0; i < kDimsPerLane; ++i) partialOut[warp][lane + 32 * i] = acc[i];
  __syncthreads();
  // Merge: rescale each warp's partial to the block's max (a warp that saw no key has max -inf, weight 0).
  float blockMax = -INFINITY;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) blockMax = fmaxf(blockMax, partialMax[w]);
  float weights[kWarps], total = 0.0f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    weights[w] = partialMax[w] == -INFINITY ? 0.0f : expf(partialMax[w] - blockMax);
    total += weights[w] * partialSum[w];
  }
  const float inv = 1.0f / total;
  for (int64_t d = threadIdx.x; d < headDim; d += kThreads) {
    float o = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) o += weights[w] * partialOut[w][d];
    store(out.data, out.dtype, t * out.stride + h * headDim + d, o * inv);
  }
}

}  // namespace

void attention(cudaStream_t stream, DType cacheDType, const DeviceStep& step, const DeviceKv& kv, int32_t layer,
               ConstMatrix q, ConstMatrix k, ConstMatrix v, int64_t numHeads, int64_t numKvHeads, int64_t headDim,
               float scale, int64_t slidingWindow, float softcap, const float* alibiSlopes, Matrix out) {
  if (step.numTokens <= 0) return;
  if (headDim > kMaxHeadDim) throw std::runtime_error("cuda attention: headDim above 512");
  Cache cache;
  cache.numLayers = kv.numLayers;
  cache.tokensPerBlock = kv.tokensPerBlock;
  cache.rowSize = numKvHeads * headDim;
  cache.blockStride = cache.tokensPerBlock * cache.rowSize;
  dispatch(cacheDType, [&](auto z) {
    using T = decltype(z);
    storeKv<T><<<static_cast<unsigned>(step.numTokens), 128, 0, stream>>>(step, static_cast<T*>(kv.pool), cache, layer, k, v);
    const dim3 grid(static_cast<unsigned>(step.numTokens), static_cast<unsigned>(numHeads));
    const int64_t group = numHeads / numKvHeads;
    const T* pool = static_cast<const T*>(kv.pool);
#define KILN_ATTEND(DPL)                                                                                   \
  attend<T, DPL><<<grid, kThreads, 0, stream>>>(step, pool, cache, layer, q, group, headDim, scale, slidingWindow, \
                                                softcap, alibiSlopes, out)
    if (headDim <= 32) KILN_ATTEND(1);
    else if (headDim <= 64) KILN_ATTEND(2);
    else if (headDim <= 128) KILN_ATTEND(4);
    else if (headDim <= 256) KILN_ATTEND(8);
    else KILN_ATTEND(16);
#undef KILN_ATTEND
  });
}

}  // namespace cuda
}  // namespace kiln
