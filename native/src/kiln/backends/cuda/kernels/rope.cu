// Rotary position embedding: one block per token, one thread per (head, pair). The angle is the float32
// product position * invFreq, its cos/sin taken in double and rounded to float32, as the CPU kernel
// (and transformers) do. Those cos/sin values are looked up in a table made once on the host when the
// engine loads (ops/rope.cpp, for positions below maxSeqLen), as TensorRT-LLM's rotary cos/sin cache:
// double-precision trigonometry on every step was most of this kernel's time.
#include "kiln/backends/cuda/kernels/attention_decode.h"
#include "kiln/backends/cuda/kernels/common.cuh"
#include "kiln/backends/cuda/kernels/kernels.h"

namespace kiln {
namespace cuda {

namespace {

// The cos/sin of a (token, frequency) pair are computed once into shared memory, then applied to every
// head (the double-precision trigonometry is the costly part).
constexpr int kMaxHalf = 256;  // rotaryDim <= 512

// The block's threads fill cosTable / sinTable [half] with the (cos, sin) x attentionScaling of each
// frequency at `position`: from the host's table below tablePositions, else computed (the caller syncs).
__device__ __forceinline__ void fillCosSin(int32_t position, int64_t half, const float* invFreq, float attentionScaling,
                                           const float* cosSin, int64_t tablePositions, float* cosTable, float* sinTable) {
  const bool tabled = cosSin != nullptr && position >= 0 && position < tablePositions;
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    if (tabled) {
      const float2 cs = reinterpret_cast<const float2*>(cosSin)[position * half + i];
      cosTable[i] = cs.x;
      sinTable[i] = cs.y;
    } else {
      const float angle = static_cast<float>(position) * invFreq[i];
      cosTable[i] = static_cast<float>(cos(static_cast<double>(angle))) * attentionScaling;
      sinTable[i] = static_cast<float>(sin(static_cast<double>(angle))) * attentionScaling;
    }
  }
}

__global__ void ropeKernel(ConstMatrix x, const int32_t* positions, int64_t numHeads, int64_t headDim, int64_t rotaryDim,
                           bool interleaved, const float* invFreq, float attentionScaling, const float* cosSin,
                           int64_t tablePositions, Matrix y) {
  startAfterPriorKernels();
  __shared__ float cosTable[kMaxHalf], sinTable[kMaxHalf];
  const int64_t t = blockIdx.x;
  const int64_t half = rotaryDim / 2;
  fillCosSin(positions[t], half, invFreq, attentionScaling, cosSin, tablePositions, cosTable, sinTable);
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

// A QKV product's rope and cache write in one launch (ropeQkv): one block per token, the cos/sin of its
// position in shared memory (fillCosSin, as ropeKernel), then every (head, pair) of q's heads and k's heads rotated,
// q' into y, k' into ropedK and the cache's K row; then v (and k's non-rotary dims) copied as they are.
// T: the cache's element type (unused without a cache).
template <typename T>
__global__ void ropeQkvKernel(ConstMatrix x, DeviceStep step, int64_t numHeads, int64_t numKvHeads, int64_t headDim,
                              int64_t rotaryDim, bool interleaved, const float* invFreq, float attentionScaling,
                              const float* cosSin, int64_t tablePositions, Matrix y, Matrix ropedK, T* pool,
                              PagedCache cache, int64_t layer) {
  startAfterPriorKernels();
  __shared__ float cosTable[kMaxHalf], sinTable[kMaxHalf];
  const int64_t t = blockIdx.x;
  const int64_t half = rotaryDim / 2;
  const int32_t position = step.positions[t];
  fillCosSin(position, half, invFreq, attentionScaling, cosSin, tablePositions, cosTable, sinTable);
  T* kRow = nullptr;
  T* vRow = nullptr;
  if (pool != nullptr) {
    const int32_t* table = step.blockTables + static_cast<int64_t>(step.tokenSeq[t]) * step.blockTableStride;
    kRow = cache.row(pool, table, layer, position, 0);
    vRow = cache.row(pool, table, layer, position, 1);
  }
  __syncthreads();
  const int64_t qCols = numHeads * headDim, kCols = numKvHeads * headDim;
  const int64_t xt = t * x.stride;
  // Rotated pairs: q's heads, then k's.
  const int64_t tasks = (numHeads + numKvHeads) * half;
  for (int64_t task = threadIdx.x; task < tasks; task += blockDim.x) {
    const int64_t h = task / half, i = task % half;
    const bool isK = h >= numHeads;
    const int64_t head = (isK ? h - numHeads : h) * headDim;
    const int64_t d1 = head + (interleaved ? 2 * i : i), d2 = head + (interleaved ? 2 * i + 1 : i + half);
    const float a = load(x.data, x.dtype, xt + (isK ? qCols : 0) + d1);
    const float b = load(x.data, x.dtype, xt + (isK ? qCols : 0) + d2);
    const float c = cosTable[i], sn = sinTable[i];
    const float r1 = a * c - b * sn, r2 = b * c + a * sn;
    if (!isK) {
      store(y.data, y.dtype, t * y.stride + d1, r1);
      store(y.data, y.dtype, t * y.stride + d2, r2);
    } else {
      store(ropedK.data, ropedK.dtype, t * ropedK.stride + d1, r1);
      store(ropedK.data, ropedK.dtype, t * ropedK.stride + d2, r2);
      if (kRow) {
        // As storeKv: the cache holds k' as rounded to ropedK's type.
        kRow[d1] = fromF<T>(roundTo(ropedK.dtype, r1));
        kRow[d2] = fromF<T>(roundTo(ropedK.dtype, r2));
      }
    }
  }
  // The heads' dims past rotaryDim: copied (q to y, k to ropedK and the cache); v into the cache.
  const int64_t rest = headDim - 2 * half;
  if (rest > 0) {
    for (int64_t task = threadIdx.x; task < (numHeads + numKvHeads) * rest; task += blockDim.x) {
      const int64_t h = task / rest;
      const bool isK = h >= numHeads;
      const int64_t d = (isK ? h - numHeads : h) * headDim + 2 * half + task % rest;
      const float v = load(x.data, x.dtype, xt + (isK ? qCols : 0) + d);
      if (!isK) {
        store(y.data, y.dtype, t * y.stride + d, v);
      } else {
        store(ropedK.data, ropedK.dtype, t * ropedK.stride + d, v);
        if (kRow) kRow[d] = fromF<T>(roundTo(ropedK.dtype, v));
      }
    }
  }
  if (vRow) {
    for (int64_t d = threadIdx.x; d < kCols; d += blockDim.x) vRow[d] = fromF<T>(load(x.data, x.dtype, xt + qCols + kCols + d));
  }
}

}  // namespace

void ropeQkv(cudaStream_t stream, ConstMatrix product, const DeviceStep& step, int64_t numHeads, int64_t numKvHeads,
             int64_t headDim, int64_t rotaryDim, bool interleaved, const float* invFreq, float attentionScaling,
             const float* cosSin, int64_t tablePositions, Matrix y, Matrix ropedK, DType cacheDType, const DeviceKv* kv,
             int32_t layer) {
  if (step.numTokens <= 0) return;
  if (rotaryDim / 2 > kMaxHalf) throw std::runtime_error("cuda rope: rotaryDim above 512");
  PagedCache cache{};
  if (kv) {
    cache.numLayers = kv->numLayers;
    cache.tokensPerBlock = kv->tokensPerBlock;
    cache.rowSize = numKvHeads * headDim;
    cache.blockStride = cache.tokensPerBlock * cache.rowSize;
  }
  dispatch(kv ? cacheDType : DType::F32, [&](auto z) {
    using T = decltype(z);
    launch(ropeQkvKernel<T>, dim3(static_cast<unsigned>(step.numTokens)), dim3(256), 0, stream, product, step, numHeads, numKvHeads,
           headDim, rotaryDim, interleaved, invFreq, attentionScaling, cosSin, tablePositions, y, ropedK,
           kv ? static_cast<T*>(kv->pool) : static_cast<T*>(nullptr), cache, static_cast<int64_t>(layer));
  });
}

void rope(cudaStream_t stream, ConstMatrix x, int64_t numTokens, const int32_t* positions, int64_t numHeads,
          int64_t headDim, int64_t rotaryDim, bool interleaved, const float* invFreq, float attentionScaling,
          const float* cosSin, int64_t tablePositions, Matrix y) {
  if (numTokens <= 0) return;
  if (rotaryDim / 2 > kMaxHalf) throw std::runtime_error("cuda rope: rotaryDim above 512");
  launch(ropeKernel, dim3(static_cast<unsigned>(numTokens)), dim3(128), 0, stream, x, positions, numHeads, headDim, rotaryDim, interleaved, invFreq, attentionScaling, cosSin, tablePositions, y);
}

}  // namespace cuda
}  // namespace kiln
