// Paged attention over packed variable-length sequences. First every token's K and V rows are stored
// into its sequence's blocks (so a prefill chunk attends to itself); then one block of threads per
// (token, query head) walks that sequence's cached positions in chunks of blockDim keys with an online
// softmax (flash-attention's running max and sum), all in float32: each thread scores one key of the
// chunk, then each thread accumulates its feature(s) of the output over the chunk's values.
#include "kiln/backends/cuda/kernels/common.cuh"
#include "kiln/backends/cuda/kernels/kernels.h"

namespace kiln {
namespace cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kMaxFeaturesPerThread = 4;  // headDim <= 512

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

template <typename T>
__global__ void __launch_bounds__(kThreads) attend(DeviceStep step, const T* pool, Cache cache, int64_t layer,
                                                   ConstMatrix q, int64_t group, int64_t headDim, float scale,
                                                   int64_t slidingWindow, float softcap, const float* alibiSlopes,
                                                   Matrix out) {
  extern __shared__ float qShared[];  // [headDim]
  __shared__ float probs[kThreads];
  __shared__ float reduce[32];
  const int64_t t = blockIdx.x;
  const int64_t h = blockIdx.y;
  const int64_t kvHead = h / group;
  const int tid = threadIdx.x;
  const int64_t pos = step.positions[t];
  const int64_t lo = slidingWindow > 0 ? max(int64_t(0), pos - slidingWindow + 1) : 0;
  const int32_t* table = step.blockTables + static_cast<int64_t>(step.tokenSeq[t]) * step.blockTableStride;
  const float slope = alibiSlopes ? alibiSlopes[h] : 0.0f;

  for (int64_t d = tid; d < headDim; d += kThreads) qShared[d] = load(q.data, q.dtype, t * q.stride + h * headDim + d);
  __syncthreads();

  float runningMax = -INFINITY, runningSum = 0.0f;
  float acc[kMaxFeaturesPerThread] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int64_t chunk = lo; chunk <= pos; chunk += kThreads) {
    const int64_t j = chunk + tid;
    float s = -INFINITY;
    if (j <= pos) {
      const T* kr = cache.row(pool, table, layer, j, 0) + kvHead * headDim;
      float dot = 0.0f;
      for (int64_t d = 0; d < headDim; ++d) dot += qShared[d] * toF(kr[d]);
      s = scale * dot;
      if (softcap > 0.0f) s = softcap * tanhf(s / softcap);
      if (alibiSlopes) s += slope * static_cast<float>(j);
    }
    const float chunkMax = blockMax(s, reduce);
    const float newMax = fmaxf(runningMax, chunkMax);
    const float p = j <= pos ? expf(s - newMax) : 0.0f;
    probs[tid] = p;
    const float chunkSum = blockSum(p, reduce);  // its barriers also publish probs
    const float correction = expf(runningMax - newMax);  // 0 on the first chunk (runningMax = -inf)
    runningSum = runningSum * correction + chunkSum;
    runningMax = newMax;
    const int64_t n = min(static_cast<int64_t>(kThreads), pos - chunk + 1);
#pragma unroll
    for (int f = 0; f < kMaxFeaturesPerThread; ++f) {
      const int64_t d = tid + static_cast<int64_t>(f) * kThreads;
      if (d >= headDim) break;
      float a = acc[f] * correction;
      for (int64_t jj = 0; jj < n; ++jj) a += probs[jj] * toF(cache.row(pool, table, layer, chunk + jj, 1)[kvHead * headDim + d]);
      acc[f] = a;
    }
    __syncthreads();  // probs is rewritten by the next chunk
  }
  const float inv = 1.0f / runningSum;
#pragma unroll
  for (int f = 0; f < kMaxFeaturesPerThread; ++f) {
    const int64_t d = tid + static_cast<int64_t>(f) * kThreads;
    if (d >= headDim) break;
    store(out.data, out.dtype, t * out.stride + h * headDim + d, acc[f] * inv);
  }
}

}  // namespace

void attention(cudaStream_t stream, DType cacheDType, const DeviceStep& step, const DeviceKv& kv, int32_t layer,
               ConstMatrix q, ConstMatrix k, ConstMatrix v, int64_t numHeads, int64_t numKvHeads, int64_t headDim,
               float scale, int64_t slidingWindow, float softcap, const float* alibiSlopes, Matrix out) {
  if (step.numTokens <= 0) return;
  if (headDim > kThreads * kMaxFeaturesPerThread) throw std::runtime_error("cuda attention: headDim above 512");
  Cache cache;
  cache.numLayers = kv.numLayers;
  cache.tokensPerBlock = kv.tokensPerBlock;
  cache.rowSize = numKvHeads * headDim;
  cache.blockStride = cache.tokensPerBlock * cache.rowSize;
  dispatch(cacheDType, [&](auto z) {
    using T = decltype(z);
    storeKv<T><<<static_cast<unsigned>(step.numTokens), 128, 0, stream>>>(step, static_cast<T*>(kv.pool), cache, layer, k, v);
    const dim3 grid(static_cast<unsigned>(step.numTokens), static_cast<unsigned>(numHeads));
    attend<T><<<grid, kThreads, static_cast<size_t>(headDim) * sizeof(float), stream>>>(
        step, static_cast<const T*>(kv.pool), cache, layer, q, numHeads / numKvHeads, headDim, scale, slidingWindow,
        softcap, alibiSlopes, out);
  });
}

}  // namespace cuda
}  // namespace kiln
