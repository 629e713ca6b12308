// Paged attention over packed variable-length sequences. First every token's K and V rows are stored
// into its sequence's blocks (so a prefill chunk attends to itself); then one block per (token, query
// head) walks that sequence's cached positions with an online softmax (flash-attention's running max
// and sum) in float32. Two walkers: attendVectorized when a head's row splits into 16-byte vectors over
// a power-of-two number of lanes (head dims 64 and 128 in 16 bits or float32, 256 in 16 bits): a warp
// then takes several keys at once, each key a group of lanes; otherwise attend, a key per warp. Decode
// steps of head dims 64 and 128 with up to 8 query heads per KV head take attention_decode.cu's kernel,
// a block per (token, KV head) instead; prefill and mixed steps of 16-bit caches take attendTiled, or
// attention_prefill.cu's mma.sync kernel for the same tiles where it applies (the default).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "kiln/backends/cuda/kernels/attention_decode.h"
#include "kiln/backends/cuda/kernels/attention_prefill.h"
#include "kiln/backends/cuda/kernels/common.cuh"
#include "kiln/backends/cuda/kernels/kernels.h"

namespace kiln {
namespace cuda {

namespace {

constexpr int kThreads = 512;  // 16 warps: at batch 1 a layer has only numHeads blocks to spread
constexpr int kMaxHeadDim = 512;

using Cache = PagedCache;

template <typename T>
__global__ void storeKv(DeviceStep step, T* pool, Cache cache, int64_t layer, ConstMatrix k, ConstMatrix v) {
  startAfterPriorKernels();
  const int64_t t = blockIdx.x;
  const int32_t* table = step.blockTables + static_cast<int64_t>(step.tokenSeq[t]) * step.blockTableStride;
  T* kr = cache.row(pool, table, layer, step.positions[t], 0);
  T* vr = cache.row(pool, table, layer, step.positions[t], 1);
  for (int64_t i = threadIdx.x; i < cache.rowSize; i += blockDim.x) {
    kr[i] = fromF<T>(load(k.data, k.dtype, t * k.stride + i));
    vr[i] = fromF<T>(load(v.data, v.dtype, t * v.stride + i));
  }
}

// The block's output row from its warps' online-softmax partials (max, sum, and output row each, in
// shared memory, after a barrier): each partial rescaled to the block's max (a warp that saw no key has
// max -inf and weighs nothing), summed, divided by the total; row element d goes to out at `at` + d.
template <int kWarps, int kPitch>
__device__ __forceinline__ void storeMergedPartials(const float* partialMax, const float* partialSum,
                                                    const float (*partialOut)[kPitch], int64_t dims, Matrix out,
                                                    int64_t at) {
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
  for (int64_t d = threadIdx.x; d < dims; d += blockDim.x) {
    float o = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) o += weights[w] * partialOut[w][d];
    store(out.data, out.dtype, at + d, o * inv);
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
  startAfterPriorKernels();
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
  storeMergedPartials<kWarps>(partialMax, partialSum, partialOut, headDim, out, t * out.stride + h * headDim);
}

// Lanes of a warp per key: a K or V row of headDim elements read as 16-byte vectors, one per lane.
template <typename T>
constexpr int vectorElements() { return 16 / static_cast<int>(sizeof(T)); }

// The online-softmax state of keys seen so far: running max, sum of exp(s - max), and the exp-weighted
// sum of V rows (this lane's kV dims). merge folds another state in (a state that saw no key has max
// -inf and weighs nothing).
template <int kV>
struct SoftmaxState {
  float max = -INFINITY, sum = 0.0f, acc[kV] = {};
  __device__ __forceinline__ void add(float s, const float* v) {
    const float newMax = fmaxf(max, s);
    const float correction = expf(max - newMax);  // 0 on the first key
    const float p = expf(s - newMax);
    sum = sum * correction + p;
#pragma unroll
    for (int i = 0; i < kV; ++i) acc[i] = acc[i] * correction + p * v[i];
    max = newMax;
  }
  __device__ __forceinline__ void merge(float otherMax, float otherSum, const float* otherAcc) {
    const float newMax = fmaxf(max, otherMax);
    if (newMax == -INFINITY) return;
    const float a = max == -INFINITY ? 0.0f : expf(max - newMax);
    const float b = otherMax == -INFINITY ? 0.0f : expf(otherMax - newMax);
    sum = sum * a + otherSum * b;
#pragma unroll
    for (int i = 0; i < kV; ++i) acc[i] = acc[i] * a + otherAcc[i] * b;
    max = newMax;
  }
};

// One block per (token, query head), kWarps warps; each warp splits into 32 / kLanes groups of kLanes
// lanes, a group per key, a lane per 16-byte vector of the key's K and V rows; each group takes kUnroll
// keys per round, their loads issued together. So a warp has 32 / kLanes * kUnroll keys' rows in flight
// where attend has one: decode attention is a chain of dependent loads, and this shortens it. Each lane
// keeps the online-softmax state of its group's keys for its own dims; groups, then warps, are merged at
// the end. Same arithmetic as attend up to the order of the sums.
//
// Split-K (decode steps, split.splits > 1): blockIdx.z is the split; the window's keys are cut into
// min(gridDim.z, ceil(keys / split.minKeys)) contiguous ranges, a block each (the others return at
// once). A block with the whole window stores its row; otherwise it writes its merged partial (max, sum,
// unnormalized output) and takes a ticket: the last block of the row merges every partial.
template <typename T, int kLanes>
__global__ void __launch_bounds__(kThreads) attendVectorized(DeviceStep step, const T* pool, Cache cache, int64_t layer,
                                                             ConstMatrix q, int64_t group, int64_t headDim, float scale,
                                                             int64_t slidingWindow, float softcap,
                                                             const float* alibiSlopes, Matrix out, AttentionSplit split,
                                                             bool earlyKeys) {
  constexpr int kWarps = kThreads / 32;
  constexpr int kV = vectorElements<T>();
  constexpr int kGroups = 32 / kLanes;
  constexpr int kUnroll = 2;
  constexpr int kDims = kLanes * kV;  // == headDim
  __shared__ float partialMax[kWarps], partialSum[kWarps];
  __shared__ float partialOut[kWarps][kDims];
  const int64_t t = blockIdx.x;
  const int64_t h = blockIdx.y;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int keyGroup = lane / kLanes, sub = lane % kLanes;
  const int64_t kvOffset = (h / group) * headDim + sub * kV;
  const int64_t pos = step.positions[t];
  const int64_t windowLo = slidingWindow > 0 ? max(int64_t(0), pos - slidingWindow + 1) : 0;
  const int64_t keys = pos - windowLo + 1;
  const int64_t splits = min(static_cast<int64_t>(gridDim.z), (keys + split.minKeys - 1) / split.minKeys);
  if (static_cast<int64_t>(blockIdx.z) >= splits) return;  // the whole block: no barrier is skipped
  const int64_t chunk = (keys + splits - 1) / splits;
  const int64_t lo = windowLo + blockIdx.z * chunk;
  const int64_t hi = min(pos, lo + chunk - 1);  // this block's keys: [lo, hi]
  const int32_t* table = step.blockTables + static_cast<int64_t>(step.tokenSeq[t]) * step.blockTableStride;

  // Everything above reads only the step's own arrays, uploaded by a copy before the step's first kernel.
  // In a decode step the keys before the token's position were stored by earlier steps, so the first
  // round's K and V rows of those keys are requested before the wait for the kernel before (the one that
  // stores this step's row): at batch 1 that round trip then overlaps the QKV kernel's end (earlyKeys,
  // KILN_CUDA_ATTENTION_EARLY_KEYS=0 turns it off). In a prefill step a key below pos may be this step's.
  const bool early = earlyKeys && step.numTokens == step.numSeqs;
  const int64_t firstBase = lo + (warp * kGroups * kUnroll);
  uint4 kEarly[kUnroll], vEarly[kUnroll];
  bool loaded[kUnroll];
#pragma unroll
  for (int u = 0; u < kUnroll; ++u) {
    const int64_t j = firstBase + u * kGroups + keyGroup;
    loaded[u] = early && j <= hi && j < pos;
    if (loaded[u]) {
      kEarly[u] = *reinterpret_cast<const uint4*>(cache.row(pool, table, layer, j, 0) + kvOffset);
      vEarly[u] = *reinterpret_cast<const uint4*>(cache.row(pool, table, layer, j, 1) + kvOffset);
    }
  }
  startAfterPriorKernels();
  const float slope = alibiSlopes ? alibiSlopes[h] : 0.0f;

  float qv[kV];
#pragma unroll
  for (int i = 0; i < kV; ++i) qv[i] = load(q.data, q.dtype, t * q.stride + h * headDim + sub * kV + i);
  SoftmaxState<kV> state;
  constexpr int kKeysPerRound = kWarps * kGroups * kUnroll;
  for (int64_t base = firstBase; base <= hi; base += kKeysPerRound) {
    uint4 kRaw[kUnroll], vRaw[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t j = base + u * kGroups + keyGroup;
      if (base == firstBase && loaded[u]) {
        kRaw[u] = kEarly[u];
        vRaw[u] = vEarly[u];
      } else if (j <= hi) {
        kRaw[u] = *reinterpret_cast<const uint4*>(cache.row(pool, table, layer, j, 0) + kvOffset);
        vRaw[u] = *reinterpret_cast<const uint4*>(cache.row(pool, table, layer, j, 1) + kvOffset);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t j = base + u * kGroups + keyGroup;
      float kf[kV], vf[kV];
      float dot = 0.0f;
      if (j <= hi) {
        vectorToFloats(kRaw[u], static_cast<const T*>(nullptr), kf);
        vectorToFloats(vRaw[u], static_cast<const T*>(nullptr), vf);
#pragma unroll
        for (int i = 0; i < kV; ++i) dot += qv[i] * kf[i];
      }
      // The group's lanes are consecutive: xor offsets below kLanes stay inside it. Every lane of the
      // warp takes part in the shuffles, valid key or not.
#pragma unroll
      for (int o = kLanes / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
      if (j <= hi) {
        float s = scale * dot;
        if (softcap > 0.0f) s = softcap * tanhf(s / softcap);
        if (alibiSlopes) s += slope * static_cast<float>(j);
        state.add(s, vf);
      }
    }
  }
  // Merge the warp's groups: lanes with the same `sub` hold the same dims.
#pragma unroll
  for (int o = kLanes; o < 32; o <<= 1) {
    const float otherMax = __shfl_xor_sync(0xffffffffu, state.max, o);
    const float otherSum = __shfl_xor_sync(0xffffffffu, state.sum, o);
    float otherAcc[kV];
#pragma unroll
    for (int i = 0; i < kV; ++i) otherAcc[i] = __shfl_xor_sync(0xffffffffu, state.acc[i], o);
    state.merge(otherMax, otherSum, otherAcc);
  }
  if (keyGroup == 0) {
    if (sub == 0) {
      partialMax[warp] = state.max;
      partialSum[warp] = state.sum;
    }
#pragma unroll
    for (int i = 0; i < kV; ++i) partialOut[warp][sub * kV + i] = state.acc[i];
  }
  __syncthreads();
  if (splits == 1) {
    storeMergedPartials<kWarps>(partialMax, partialSum, partialOut, headDim, out, t * out.stride + h * headDim);
    return;
  }
  // This split's partial: the warps merged to one (max, sum, unnormalized output row).
  const int64_t rowIndex = t * gridDim.y + h;
  const int64_t pitch = headDim + 2;
  float* mine = split.partials + (rowIndex * gridDim.z + blockIdx.z) * pitch;
  float blockMax = -INFINITY;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) blockMax = fmaxf(blockMax, partialMax[w]);
  float weights[kWarps], total = 0.0f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    weights[w] = partialMax[w] == -INFINITY ? 0.0f : expf(partialMax[w] - blockMax);
    total += weights[w] * partialSum[w];
  }
  for (int64_t d = threadIdx.x; d < headDim; d += blockDim.x) {
    float o = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) o += weights[w] * partialOut[w][d];
    mine[2 + d] = o;
  }
  if (threadIdx.x == 0) mine[0] = blockMax, mine[1] = total;
  // Publish the partial, then take a ticket; the last block of the row sees every other's partial.
  __threadfence();
  __syncthreads();
  __shared__ bool last;
  if (threadIdx.x == 0) {
    const unsigned ticket = atomicAdd(split.counters + rowIndex, 1u);
    last = ticket == static_cast<unsigned>(splits - 1);
    if (last) split.counters[rowIndex] = 0u;  // ready for the next launch (every split has arrived)
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  const float* partials = split.partials + rowIndex * gridDim.z * pitch;
  float rowMax = -INFINITY;
  for (int64_t z = 0; z < splits; ++z) rowMax = fmaxf(rowMax, __ldcg(partials + z * pitch));
  float rowTotal = 0.0f;
  for (int64_t z = 0; z < splits; ++z) {
    const float m = __ldcg(partials + z * pitch);
    if (m != -INFINITY) rowTotal += expf(m - rowMax) * __ldcg(partials + z * pitch + 1);
  }
  const float inv = 1.0f / rowTotal;
  for (int64_t d = threadIdx.x; d < headDim; d += blockDim.x) {
    float o = 0.0f;
    for (int64_t z = 0; z < splits; ++z) {
      const float m = __ldcg(partials + z * pitch);
      if (m != -INFINITY) o += expf(m - rowMax) * __ldcg(partials + z * pitch + 2 + d);
    }
    store(out.data, out.dtype, t * out.stride + h * headDim + d, o * inv);
  }
}

// 16-bit caches, head dims 64 and 128, prefill, mixed and large-batch decode steps: flash attention on
// tensor cores (WMMA, FlashAttention-2's loop). The query tiles (up to kQueryTile tokens of one sequence
// at consecutive positions, cut by stageStep; a decode token is a tile of its own) are split into blocks
// of `tokens` tokens times the `group` query heads that share a KV head: one block of 4 warps per
// (tile, KV head, part of the tile), its 64 rows the (token, head) pairs, as FlashInfer lays out GQA.
// The rows' queries go to shared memory in the cache's type; for each tile of kKeyTile cached keys, K
// and V are staged in shared memory once for all the rows, each warp computes its 16 rows of S = Q K^T,
// takes their online softmax (running max and sum per row; causality, sliding window, softcap, ALiBi),
// and adds P V to its rows of O (float32). Where attend reads every key once per (token, query head),
// this reads it once per (tokens, KV head), and as matrix products. Q and P are rounded to the cache's
// type for the tensor cores, as flash attention does; scores, softmax and O stay float32.
constexpr int kKeyTile = 64;
constexpr int kTiledThreads = 128;
constexpr int kTiledDecodeBatch = 4;  // decode steps of at least this many sequences use attendTiled
// Row pitches of S (float) and P in shared memory, padded so that the softmax's lanes (two per row)
// do not all hit one bank.
constexpr int kSPitch = kKeyTile + 4;
constexpr int kPPitch = kKeyTile + 8;

template <typename T, int D>
struct TiledShared {
  static constexpr size_t q = 0;
  static constexpr size_t k = q + kQueryTile * D * sizeof(T);
  static constexpr size_t v = k + kKeyTile * D * sizeof(T);
  static constexpr size_t s = v + kKeyTile * D * sizeof(T);
  static constexpr size_t p = s + kQueryTile * kSPitch * sizeof(float);
  static constexpr size_t o = p + kQueryTile * kPPitch * sizeof(T);
  static constexpr size_t rows = o + kQueryTile * D * sizeof(float);
  static constexpr size_t bytes = rows + 5 * kQueryTile * sizeof(float);
};

template <typename T, int D>
__global__ void __launch_bounds__(kTiledThreads) attendTiled(DeviceStep step, const T* pool, Cache cache, int64_t layer,
                                                              ConstMatrix q, int group, int tokens, float scale,
                                                              int64_t slidingWindow, float softcap,
                                                              const float* alibiSlopes, Matrix out) {
  namespace wmma = nvcuda::wmma;
  using Layout = TiledShared<T, D>;
  startAfterPriorKernels();
  extern __shared__ __align__(128) unsigned char shared[];
  T* qs = reinterpret_cast<T*>(shared + Layout::q);
  T* ks = reinterpret_cast<T*>(shared + Layout::k);
  T* vs = reinterpret_cast<T*>(shared + Layout::v);
  float* ss = reinterpret_cast<float*>(shared + Layout::s);
  T* ps = reinterpret_cast<T*>(shared + Layout::p);
  float* os = reinterpret_cast<float*>(shared + Layout::o);
  float* rowMax = reinterpret_cast<float*>(shared + Layout::rows);
  float* rowSum = rowMax + kQueryTile;
  float* rowCorrection = rowSum + kQueryTile;
  int* rowPos = reinterpret_cast<int*>(rowCorrection + kQueryTile);
  int* rowHead = rowPos + kQueryTile;

  // This block's tokens: part blockIdx.z of the tile, `tokens` of them at most.
  const int tileFirst = step.tiles[2 * blockIdx.x], tileCount = step.tiles[2 * blockIdx.x + 1];
  const int first = tileFirst + static_cast<int>(blockIdx.z) * tokens;
  const int count = min(tokens, tileFirst + tileCount - first);
  if (count <= 0) return;
  const int rows = count * group;  // row r: token first + r / group, query head kvHead * group + r % group
  const int64_t kvHead = blockIdx.y;
  const int32_t* table = step.blockTables + static_cast<int64_t>(step.tokenSeq[first]) * step.blockTableStride;
  const int64_t kvOffset = kvHead * D;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;

  for (int i = tid; i < kQueryTile; i += kTiledThreads) {
    rowPos[i] = i < rows ? step.positions[first + i / group] : -1;
    rowHead[i] = static_cast<int>(kvHead) * group + i % group;
    rowMax[i] = -INFINITY;
    rowSum[i] = 0.0f;
  }
  for (int e = tid; e < kQueryTile * D; e += kTiledThreads) {
    const int i = e / D, d = e % D;
    const int64_t at = static_cast<int64_t>(first + i / group) * q.stride + static_cast<int64_t>(kvHead * group + i % group) * D + d;
    qs[e] = fromF<T>(i < rows ? load(q.data, q.dtype, at) : 0.0f);
    os[e] = 0.0f;
  }
  __syncthreads();
  const int lastPos = rowPos[rows - 1];
  const int lo = slidingWindow > 0 ? max(0, rowPos[0] - static_cast<int>(slidingWindow) + 1) : 0;
  constexpr int kVec = 16 / static_cast<int>(sizeof(T));  // elements per 16-byte vector
  for (int k0 = lo; k0 <= lastPos; k0 += kKeyTile) {
    for (int e = tid; e < kKeyTile * (D / kVec); e += kTiledThreads) {
      const int j = e / (D / kVec), c = e % (D / kVec);
      const int key = k0 + j;
      uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
      if (key <= lastPos) {
        kv = *reinterpret_cast<const uint4*>(cache.row(pool, table, layer, key, 0) + kvOffset + c * kVec);
        vv = *reinterpret_cast<const uint4*>(cache.row(pool, table, layer, key, 1) + kvOffset + c * kVec);
      }
      reinterpret_cast<uint4*>(ks)[e] = kv;
      reinterpret_cast<uint4*>(vs)[e] = vv;
    }
    __syncthreads();
    // S rows of this warp: Q[16, D] . K^T[D, 64] (K row-major [key][d] is K^T column-major).
    {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kKeyTile / 16];
#pragma unroll
      for (int n = 0; n < kKeyTile / 16; ++n) wmma::fill_fragment(acc[n], 0.0f);
#pragma unroll
      for (int kk = 0; kk < D; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::load_matrix_sync(a, qs + warp * 16 * D + kk, D);
#pragma unroll
        for (int n = 0; n < kKeyTile / 16; ++n) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
          wmma::load_matrix_sync(b, ks + n * 16 * D + kk, D);
          wmma::mma_sync(acc[n], a, b, acc[n]);
        }
      }
#pragma unroll
      for (int n = 0; n < kKeyTile / 16; ++n)
        wmma::store_matrix_sync(ss + warp * 16 * kSPitch + n * 16, acc[n], kSPitch, wmma::mem_row_major);
    }
    __syncwarp();
    // Online softmax of the warp's 16 rows: two lanes per row, 32 keys each.
    {
      const int r = warp * 16 + (lane >> 1), half = lane & 1;
      const int pos = rowPos[r];
      const float slope = alibiSlopes && pos >= 0 ? alibiSlopes[rowHead[r]] : 0.0f;
      const int lowest = slidingWindow > 0 ? pos - static_cast<int>(slidingWindow) + 1 : 0;
      float scores[kKeyTile / 2];
      float tileMax = -INFINITY;
#pragma unroll
      for (int c = 0; c < kKeyTile / 2; ++c) {
        const int col = half * (kKeyTile / 2) + c, key = k0 + col;
        float sc = ss[r * kSPitch + col] * scale;
        if (softcap > 0.0f) sc = softcap * tanhf(sc / softcap);
        if (alibiSlopes) sc += slope * static_cast<float>(key);
        const bool valid = pos >= 0 && key <= pos && key >= lowest;
        scores[c] = valid ? sc : -INFINITY;
        tileMax = fmaxf(tileMax, scores[c]);
      }
      tileMax = fmaxf(tileMax, __shfl_xor_sync(0xffffffffu, tileMax, 1));
      const float oldMax = rowMax[r];
      const float newMax = fmaxf(oldMax, tileMax);
      const float correction = oldMax == -INFINITY ? 0.0f : expf(oldMax - newMax);
      float sum = 0.0f;
#pragma unroll
      for (int c = 0; c < kKeyTile / 2; ++c) {
        const float pr = scores[c] == -INFINITY ? 0.0f : expf(scores[c] - newMax);
        sum += pr;
        ps[r * kPPitch + half * (kKeyTile / 2) + c] = fromF<T>(pr);
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      __syncwarp();  // both lanes of the row have read rowMax
      if (half == 0) {
        rowMax[r] = newMax;
        rowSum[r] = rowSum[r] * correction + sum;
        rowCorrection[r] = correction;
      }
    }
    __syncwarp();
    for (int e = lane; e < 16 * D; e += 32) {
      const int r = warp * 16 + e / D;
      os[r * D + e % D] *= rowCorrection[r];
    }
    __syncwarp();
    // O rows of this warp += P[16, 64] . V[64, D].
#pragma unroll
    for (int n = 0; n < D / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> o;
      wmma::load_matrix_sync(o, os + warp * 16 * D + n * 16, D, wmma::mem_row_major);
#pragma unroll
      for (int kk = 0; kk < kKeyTile; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;
        wmma::load_matrix_sync(a, ps + warp * 16 * kPPitch + kk, kPPitch);
        wmma::load_matrix_sync(b, vs + kk * D + n * 16, D);
        wmma::mma_sync(o, a, b, o);
      }
      wmma::store_matrix_sync(os + warp * 16 * D + n * 16, o, D, wmma::mem_row_major);
    }
    __syncthreads();  // the next key tile overwrites ks and vs
  }
  for (int e = tid; e < kQueryTile * D; e += kTiledThreads) {
    const int i = e / D, d = e % D;
    if (i < rows) {
      const float total = rowSum[i];
      const int64_t at = static_cast<int64_t>(first + i / group) * out.stride + static_cast<int64_t>(rowHead[i]) * D + d;
      store(out.data, out.dtype, at, total > 0.0f ? os[e] / total : 0.0f);
    }
  }
}

template <typename T, int D>
void launchTiled(cudaStream_t stream, const DeviceStep& step, const T* pool, Cache cache, int64_t layer, ConstMatrix q,
                 int64_t numKvHeads, int64_t group, float scale, int64_t slidingWindow, float softcap,
                 const float* alibiSlopes, Matrix out) {
  constexpr size_t bytes = TiledShared<T, D>::bytes;
  // Tokens per block: as many as fill 64 rows with their group of query heads. Decode tiles hold one.
  const int tokens = static_cast<int>(kQueryTile / group);
  const bool decode = step.numTokens == step.numSeqs;
  const unsigned parts = decode ? 1u : static_cast<unsigned>((kQueryTile + tokens - 1) / tokens);
  static const cudaError_t opted =
      cudaFuncSetAttribute(attendTiled<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  if (opted != cudaSuccess) throw std::runtime_error(std::string("cuda attention: ") + cudaGetErrorString(opted));
  launch(attendTiled<T, D>, dim3(static_cast<unsigned>(step.numTiles), static_cast<unsigned>(numKvHeads), parts),
         dim3(kTiledThreads), bytes, stream, step, pool, cache, layer, q, static_cast<int>(group), tokens, scale,
         slidingWindow, softcap, alibiSlopes, out);
}

// KILN_CUDA_ATTENTION_EARLY_KEYS=0 (read once): attendVectorized requests no K / V row before its wait.
bool earlyKeys() {
  static const bool on = [] {
    const char* setting = std::getenv("KILN_CUDA_ATTENTION_EARLY_KEYS");
    return !(setting && std::string(setting) == "0");
  }();
  return on;
}

}  // namespace

bool decodeGroupedByKvHead(int64_t numTokens, DType cacheDType, int64_t headDim, int64_t group, float softcap,
                           const float* alibiSlopes) {
  // KILN_CUDA_GROUPED_DECODE=0: decode steps take attendVectorized / attendTiled (for comparisons); a
  // positive number N: decode steps of N sequences or more are grouped (default kGroupedDecodeBatch).
  static const int64_t fromBatch = [] {
    const char* setting = std::getenv("KILN_CUDA_GROUPED_DECODE");
    if (!setting) return kGroupedDecodeBatch;
    const long long n = std::atoll(setting);
    return n <= 0 ? INT64_MAX : static_cast<int64_t>(n);
  }();
  // From kTiledDecodeFromBatch sequences on, decode steps take the tensor-core tiles instead (attendPrefill,
  // or attendTiled): at concurrency 64 on the H200 a 64-sequence step took 1.73 ms against 1.91 grouped
  // (session 11); attendTiled (WMMA), where the mma kernel does not apply, was slower than grouped (session 4).
  // KILN_CUDA_TILED_DECODE_FROM=N moves that bound (0: never).
  static const int64_t tilesFrom = [] {
    const char* setting = std::getenv("KILN_CUDA_TILED_DECODE_FROM");
    if (!setting) return kTiledDecodeFromBatch;
    const long long n = std::atoll(setting);
    return n <= 0 ? INT64_MAX : static_cast<int64_t>(n);
  }();
  if (numTokens < fromBatch || !groupedDecodeApplies(headDim, group)) return false;
  return numTokens < tilesFrom || !(prefillMmaSelected() && prefillMmaApplies(cacheDType, headDim, softcap, alibiSlopes));
}

int32_t attentionSplits(int64_t numTokens, int64_t blocksPerToken, int multiProcessors) {
  const int64_t rows = numTokens * blocksPerToken;
  if (rows <= 0) return 1;
  const int64_t splits = (2 * static_cast<int64_t>(multiProcessors) + rows - 1) / rows;
  return static_cast<int32_t>(std::min<int64_t>(std::max<int64_t>(splits, 1), kMaxAttentionSplits));
}

void storeKvRows(cudaStream_t stream, DType cacheDType, const DeviceStep& step, const DeviceKv& kv, int32_t layer,
                 ConstMatrix k, ConstMatrix v) {
  if (step.numTokens <= 0) return;
  Cache cache;
  cache.numLayers = kv.numLayers;
  cache.tokensPerBlock = kv.tokensPerBlock;
  cache.rowSize = static_cast<int64_t>(kv.numKvHeads) * kv.headDim;
  cache.blockStride = cache.tokensPerBlock * cache.rowSize;
  dispatch(cacheDType, [&](auto z) {
    using T = decltype(z);
    launch(storeKv<T>, dim3(static_cast<unsigned>(step.numTokens)), dim3(128), 0, stream, step, static_cast<T*>(kv.pool), cache, layer, k, v);
  });
}

void attention(cudaStream_t stream, DType cacheDType, const DeviceStep& step, const DeviceKv& kv, int32_t layer,
               ConstMatrix q, ConstMatrix k, ConstMatrix v, int64_t numHeads, int64_t numKvHeads, int64_t headDim,
               float scale, int64_t slidingWindow, float softcap, const float* alibiSlopes, Matrix out,
               const AttentionSplit& split, bool storeRows) {
  if (step.numTokens <= 0) return;
  if (headDim > kMaxHeadDim) throw std::runtime_error("cuda attention: headDim above 512");
  Cache cache;
  cache.numLayers = kv.numLayers;
  cache.tokensPerBlock = kv.tokensPerBlock;
  cache.rowSize = numKvHeads * headDim;
  cache.blockStride = cache.tokensPerBlock * cache.rowSize;
  dispatch(cacheDType, [&](auto z) {
    using T = decltype(z);
    if (storeRows) {
      launch(storeKv<T>, dim3(static_cast<unsigned>(step.numTokens)), dim3(128), 0, stream, step, static_cast<T*>(kv.pool), cache, layer, k, v);
    }
    const dim3 grid(static_cast<unsigned>(step.numTokens), static_cast<unsigned>(numHeads));
    const int64_t group = numHeads / numKvHeads;
    const T* pool = static_cast<const T*>(kv.pool);
    // Decode steps of kGroupedDecodeBatch sequences or more: grouped by KV head (attention_decode.cu),
    // split-K when asked.
    if (step.numTokens == step.numSeqs &&
        decodeGroupedByKvHead(step.numTokens, cacheDType, headDim, group, softcap, alibiSlopes)) {
      attendDecode(stream, cacheDType, step, kv.pool, cache, layer, q, numHeads, numKvHeads, headDim, scale, slidingWindow,
                   softcap, alibiSlopes, out, split);
      return;
    }
    if constexpr (!std::is_same_v<T, float>) {
      // Decode steps of a few sequences keep attendVectorized: a block per query head spreads them wider.
      const bool decode = step.numTokens == step.numSeqs;
      if (step.numTiles > 0 && (headDim == 64 || headDim == 128) && group <= kQueryTile &&
          (!decode || step.numSeqs >= kTiledDecodeBatch)) {
        // The same tiles on mma.sync (attention_prefill.cu) unless KILN_CUDA_PREFILL_ATTENTION=wmma.
        if (prefillMmaSelected() && prefillMmaApplies(cacheDType, headDim, softcap, alibiSlopes)) {
          attendPrefill(stream, cacheDType, step, kv.pool, cache, layer, q, numKvHeads, group, headDim, scale, slidingWindow,
                        out);
          return;
        }
        if (headDim == 64) {
          launchTiled<T, 64>(stream, step, pool, cache, layer, q, numKvHeads, group, scale, slidingWindow, softcap,
                             alibiSlopes, out);
        } else {
          launchTiled<T, 128>(stream, step, pool, cache, layer, q, numKvHeads, group, scale, slidingWindow, softcap,
                              alibiSlopes, out);
        }
        return;
      }
    }
    const int64_t lanes = headDim / vectorElements<T>();
    const bool vectorized = headDim % vectorElements<T>() == 0 && (lanes == 4 || lanes == 8 || lanes == 16 || lanes == 32);
    // Split-K only for decode steps: their rows (tokens x heads) are few, and the partials' room is
    // sized for them.
    const bool splitting = split.splits > 1 && step.numTokens == step.numSeqs && split.partials && split.counters;
    const dim3 splitGrid(grid.x, grid.y, splitting ? static_cast<unsigned>(split.splits) : 1u);
#define KILN_ATTEND_VECTORIZED(LANES)                                                                           \
  launch(attendVectorized<T, LANES>, splitGrid, dim3(kThreads), 0, stream, step, pool, cache, static_cast<int64_t>(layer), \
         q, group, headDim, scale, slidingWindow, softcap, alibiSlopes, out, split, earlyKeys())
    if (vectorized) {
      if (lanes == 4) KILN_ATTEND_VECTORIZED(4);
      else if (lanes == 8) KILN_ATTEND_VECTORIZED(8);
      else if (lanes == 16) KILN_ATTEND_VECTORIZED(16);
      else KILN_ATTEND_VECTORIZED(32);
      return;
    }
#undef KILN_ATTEND_VECTORIZED
#define KILN_ATTEND(DPL)                                                                                          \
  launch(attend<T, DPL>, grid, dim3(kThreads), 0, stream, step, pool, cache, static_cast<int64_t>(layer), q, group, \
         headDim, scale, slidingWindow, softcap, alibiSlopes, out)
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
