// Decode attention grouped by KV head (FlashInfer's decode layout for GQA): one block per (sequence's
// token, KV head, split of the keys) computes the G = numHeads / numKvHeads query heads that share the
// KV head, so each K and V row is read once for all G of them (attendVectorized reads it G times, and
// attendTiled spends a 64-row tensor-core tile on G rows). Each warp walks chunks of 32 keys:
//   - scores: lane j takes key j of the chunk, reads its whole K row as 16-byte vectors and computes
//     the G dot products against the queries in shared memory (broadcast reads);
//   - online softmax per head over the chunk (warp max and sum), the chunk's probabilities to shared
//     memory;
//   - P V: lanes split the head's dims, each reads its slice of the chunk's V rows (coalesced) and
//     accumulates all G heads.
// The block's warps are merged at the end; with split-K (AttentionSplit, decode steps of few
// sequences) each block writes its per-head partials and the last block of a (token, KV head) merges
// them, as attendVectorized does. Float32 throughout; causal, sliding window, softcap and ALiBi.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kiln/backends/cuda/kernels/attention_decode.h"
#include "kiln/backends/cuda/kernels/common.cuh"

namespace kiln {
namespace cuda {

namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kChunk = 32;  // keys per warp step: one per lane

// n consecutive elements of T (n * sizeof(T) of 4, 8 or 16 bytes), loaded as one vector.
template <typename T, int n>
struct alignas(n * sizeof(T)) Slice {
  uint32_t words[n * sizeof(T) / 4];
};

template <typename T, int n>
__device__ __forceinline__ void sliceToFloats(const Slice<T, n>& v, float* out) {
  if constexpr (sizeof(T) == 4) {
#pragma unroll
    for (int i = 0; i < n; ++i) out[i] = __uint_as_float(v.words[i]);
  } else {
#pragma unroll
    for (int i = 0; i < n; i += 2) {
      uint4 pair{v.words[i / 2], 0u, 0u, 0u};
      float f[8];
      vectorToFloats(pair, static_cast<const T*>(nullptr), f);
      out[i] = f[0];
      out[i + 1] = f[1];
    }
  }
}

template <typename T, int D, int G>
__global__ void __launch_bounds__(kThreads) attendDecodeGrouped(DeviceStep step, const T* pool, PagedCache cache,
                                                                int64_t layer, ConstMatrix q, float scale,
                                                                int64_t slidingWindow, float softcap,
                                                                const float* alibiSlopes, Matrix out,
                                                                AttentionSplit split) {
  constexpr int kV = 16 / static_cast<int>(sizeof(T));  // elements per 16-byte vector of a K row
  constexpr int kDimsPerLane = D / 32;                  // P V: this lane's dims of every head
  // A lane's slice of a V row (kDimsPerLane elements: 4, 8 or 16 bytes) as one load, and the rows whose
  // slices are in flight at once: 32 words of registers a lane.
  using VSlice = Slice<T, kDimsPerLane>;
  constexpr int kVInFlight = 32 / (sizeof(VSlice) / 4);
  __shared__ __align__(16) float qs[G][D];
  __shared__ float ps[kWarps][kChunk][G];
  __shared__ const T* vRows[kWarps][kChunk];  // the chunk's V rows, found by the lanes that scored them
  __shared__ float partialMax[kWarps][G], partialSum[kWarps][G];
  __shared__ float partialOut[kWarps][G][D];
  __shared__ bool last;
  startAfterPriorKernels();
  const int64_t t = blockIdx.x;
  const int64_t g = blockIdx.y;
  const int64_t numHeads = static_cast<int64_t>(gridDim.y) * G;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t pos = step.positions[t];
  const int64_t windowLo = slidingWindow > 0 ? max(int64_t(0), pos - slidingWindow + 1) : 0;
  const int64_t keys = pos - windowLo + 1;
  const int64_t splits = min(static_cast<int64_t>(gridDim.z), (keys + split.minKeys - 1) / split.minKeys);
  if (static_cast<int64_t>(blockIdx.z) >= splits) return;  // the whole block: no barrier is skipped
  const int64_t per = (keys + splits - 1) / splits;
  const int64_t lo = windowLo + blockIdx.z * per;
  const int64_t hi = min(pos, lo + per - 1);  // this block's keys: [lo, hi]
  const int32_t* table = step.blockTables + static_cast<int64_t>(step.tokenSeq[t]) * step.blockTableStride;
  const int64_t kvOffset = g * D;

  for (int i = threadIdx.x; i < G * D; i += kThreads) {
    const int h = i / D, d = i % D;
    qs[h][d] = load(q.data, q.dtype, t * q.stride + (g * G + h) * D + d);
  }
  float slope[G];
#pragma unroll
  for (int h = 0; h < G; ++h) slope[h] = alibiSlopes ? alibiSlopes[g * G + h] : 0.0f;
  __syncthreads();

  float runningMax[G], runningSum[G], acc[G][kDimsPerLane];
#pragma unroll
  for (int h = 0; h < G; ++h) {
    runningMax[h] = -INFINITY;
    runningSum[h] = 0.0f;
#pragma unroll
    for (int i = 0; i < kDimsPerLane; ++i) acc[h][i] = 0.0f;
  }

  for (int64_t base = lo + warp * kChunk; base <= hi; base += kWarps * kChunk) {
    // Lane j: key base + j. Its K row is its own; its V row's address goes to the warp (P V splits every
    // V row over the lanes).
    const int64_t j = base + lane;
    const bool valid = j <= hi;
    const T* k = nullptr;
    if (valid) {
      k = cache.row(pool, table, layer, j, 0) + kvOffset;
      vRows[warp][lane] = cache.row(pool, table, layer, j, 1) + kvOffset;
    }
    __syncwarp();
    const int count = static_cast<int>(min(static_cast<int64_t>(kChunk), hi - base + 1));
    // The first kVInFlight V rows' slices are requested now, with the K row below: one round trip to
    // memory for the chunk, where loading V after the softmax took a second (and more, 8 rows at a time).
    VSlice vRaw[kVInFlight];
#pragma unroll
    for (int u = 0; u < kVInFlight; ++u) {
      if (u < count) vRaw[u] = *reinterpret_cast<const VSlice*>(vRows[warp][u] + lane * kDimsPerLane);
    }
    // Scores: the K row's loads issued together (8 in flight), then the dot products.
    float s[G];
#pragma unroll
    for (int h = 0; h < G; ++h) s[h] = 0.0f;
    if (valid) {
      constexpr int kVectors = D / kV, kBatch = kVectors < 8 ? kVectors : 8;
#pragma unroll
      for (int v0 = 0; v0 < kVectors; v0 += kBatch) {
        uint4 raw[kBatch];
#pragma unroll
        for (int b = 0; b < kBatch; ++b) raw[b] = *reinterpret_cast<const uint4*>(k + (v0 + b) * kV);
#pragma unroll
        for (int b = 0; b < kBatch; ++b) {
          float kf[kV];
          vectorToFloats(raw[b], static_cast<const T*>(nullptr), kf);
#pragma unroll
          for (int h = 0; h < G; ++h) {
#pragma unroll
            for (int e = 0; e < kV; ++e) s[h] += qs[h][(v0 + b) * kV + e] * kf[e];
          }
        }
      }
    }
    // Online softmax of the chunk, per head; the probabilities to shared memory for P V.
#pragma unroll
    for (int h = 0; h < G; ++h) {
      float score = scale * s[h];
      if (softcap > 0.0f) score = softcap * tanhf(score / softcap);
      if (alibiSlopes) score += slope[h] * static_cast<float>(j);
      const float chunkMax = warpMax(valid ? score : -INFINITY);
      const float newMax = fmaxf(runningMax[h], chunkMax);
      const float correction = expf(runningMax[h] - newMax);  // 0 on the first chunk
      const float p = valid ? expf(score - newMax) : 0.0f;
      runningSum[h] = runningSum[h] * correction + warpSum(p);
#pragma unroll
      for (int i = 0; i < kDimsPerLane; ++i) acc[h][i] *= correction;
      runningMax[h] = newMax;
      ps[warp][lane][h] = p;
    }
    __syncwarp();
    // P V: this lane's dims of the chunk's V rows, from the slices loaded above, then (when a slice
    // takes more than one word) the rest kVInFlight rows at a time.
    const auto addRow = [&](int r, const VSlice& raw) {
      float vf[kDimsPerLane];
      sliceToFloats(raw, vf);
#pragma unroll
      for (int h = 0; h < G; ++h) {
        const float p = ps[warp][r][h];
#pragma unroll
        for (int i = 0; i < kDimsPerLane; ++i) acc[h][i] += p * vf[i];
      }
    };
#pragma unroll
    for (int u = 0; u < kVInFlight; ++u) {
      if (u < count) addRow(u, vRaw[u]);
    }
    for (int r0 = kVInFlight; r0 < count; r0 += kVInFlight) {
#pragma unroll
      for (int u = 0; u < kVInFlight; ++u) {
        if (r0 + u < count) vRaw[u] = *reinterpret_cast<const VSlice*>(vRows[warp][r0 + u] + lane * kDimsPerLane);
      }
#pragma unroll
      for (int u = 0; u < kVInFlight; ++u) {
        if (r0 + u < count) addRow(r0 + u, vRaw[u]);
      }
    }
    __syncwarp();  // ps and vRows are rewritten by the next chunk
  }

  // The warps' partials (every lane holds its warp's max and sum; each lane its dims).
#pragma unroll
  for (int h = 0; h < G; ++h) {
    if (lane == 0) {
      partialMax[warp][h] = runningMax[h];
      partialSum[warp][h] = runningSum[h];
    }
#pragma unroll
    for (int i = 0; i < kDimsPerLane; ++i) partialOut[warp][h][lane * kDimsPerLane + i] = acc[h][i];
  }
  __syncthreads();
  // Merged per head: the block's max, the weight of each warp, and the (unnormalized) output row.
  auto merged = [&](int h, float* blockMax, float* weights, float* total) {
    *blockMax = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) *blockMax = fmaxf(*blockMax, partialMax[w][h]);
    *total = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      weights[w] = partialMax[w][h] == -INFINITY ? 0.0f : expf(partialMax[w][h] - *blockMax);
      *total += weights[w] * partialSum[w][h];
    }
  };
  if (splits == 1) {
    for (int i = threadIdx.x; i < G * D; i += kThreads) {
      const int h = i / D, d = i % D;
      float blockMax, weights[kWarps], total;
      merged(h, &blockMax, weights, &total);
      float o = 0.0f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) o += weights[w] * partialOut[w][h][d];
      store(out.data, out.dtype, t * out.stride + (g * G + h) * D + d, o / total);
    }
    return;
  }
  // Split-K: this block's partial of each head, then a ticket; the last block merges every split.
  constexpr int64_t kPitch = D + 2;
  for (int i = threadIdx.x; i < G * D; i += kThreads) {
    const int h = i / D, d = i % D;
    float blockMax, weights[kWarps], total;
    merged(h, &blockMax, weights, &total);
    float o = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) o += weights[w] * partialOut[w][h][d];
    float* mine = split.partials + ((t * numHeads + g * G + h) * gridDim.z + blockIdx.z) * kPitch;
    mine[2 + d] = o;
    if (d == 0) mine[0] = blockMax, mine[1] = total;
  }
  __threadfence();
  __syncthreads();
  const int64_t ticketIndex = t * gridDim.y + g;
  if (threadIdx.x == 0) {
    const unsigned ticket = atomicAdd(split.counters + ticketIndex, 1u);
    last = ticket == static_cast<unsigned>(splits - 1);
    if (last) split.counters[ticketIndex] = 0u;  // ready for the next launch (every split has arrived)
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  for (int i = threadIdx.x; i < G * D; i += kThreads) {
    const int h = i / D, d = i % D;
    const float* partials = split.partials + (t * numHeads + g * G + h) * gridDim.z * kPitch;
    float rowMax = -INFINITY;
    for (int64_t z = 0; z < splits; ++z) rowMax = fmaxf(rowMax, __ldcg(partials + z * kPitch));
    float total = 0.0f, o = 0.0f;
    for (int64_t z = 0; z < splits; ++z) {
      const float m = __ldcg(partials + z * kPitch);
      if (m == -INFINITY) continue;
      const float w = expf(m - rowMax);
      total += w * __ldcg(partials + z * kPitch + 1);
      o += w * __ldcg(partials + z * kPitch + 2 + d);
    }
    store(out.data, out.dtype, t * out.stride + (g * G + h) * D + d, o / total);
  }
}

template <typename T, int D, int G>
void launchGrouped(cudaStream_t stream, const DeviceStep& step, const T* pool, PagedCache cache, int64_t layer,
                   ConstMatrix q, int64_t numKvHeads, float scale, int64_t slidingWindow, float softcap,
                   const float* alibiSlopes, Matrix out, const AttentionSplit& split, unsigned splits) {
  launch(attendDecodeGrouped<T, D, G>, dim3(static_cast<unsigned>(step.numTokens), static_cast<unsigned>(numKvHeads), splits),
         dim3(kThreads), 0, stream, step, pool, cache, layer, q, scale, slidingWindow, softcap, alibiSlopes, out, split);
}

template <typename T, int D>
bool dispatchGroup(int64_t group, cudaStream_t stream, const DeviceStep& step, const T* pool, PagedCache cache,
                   int64_t layer, ConstMatrix q, int64_t numKvHeads, float scale, int64_t slidingWindow, float softcap,
                   const float* alibiSlopes, Matrix out, const AttentionSplit& split, unsigned splits) {
  switch (group) {
    case 1: launchGrouped<T, D, 1>(stream, step, pool, cache, layer, q, numKvHeads, scale, slidingWindow, softcap, alibiSlopes, out, split, splits); return true;
    case 2: launchGrouped<T, D, 2>(stream, step, pool, cache, layer, q, numKvHeads, scale, slidingWindow, softcap, alibiSlopes, out, split, splits); return true;
    case 4: launchGrouped<T, D, 4>(stream, step, pool, cache, layer, q, numKvHeads, scale, slidingWindow, softcap, alibiSlopes, out, split, splits); return true;
    case 8: launchGrouped<T, D, 8>(stream, step, pool, cache, layer, q, numKvHeads, scale, slidingWindow, softcap, alibiSlopes, out, split, splits); return true;
    default: return false;
  }
}

}  // namespace

bool groupedDecodeApplies(int64_t headDim, int64_t group) {
  return (headDim == 64 || headDim == 128) && (group == 1 || group == 2 || group == 4 || group == 8);
}

void attendDecode(cudaStream_t stream, DType cacheDType, const DeviceStep& step, const void* pool, PagedCache cache,
                  int64_t layer, ConstMatrix q, int64_t numHeads, int64_t numKvHeads, int64_t headDim, float scale,
                  int64_t slidingWindow, float softcap, const float* alibiSlopes, Matrix out, const AttentionSplit& split) {
  const int64_t group = numHeads / numKvHeads;
  if (!groupedDecodeApplies(headDim, group)) throw std::runtime_error("cuda attention: grouped decode does not take these heads");
  const unsigned splits = split.splits > 1 && split.partials && split.counters ? static_cast<unsigned>(split.splits) : 1u;
  dispatch(cacheDType, [&](auto z) {
    using T = decltype(z);
    const T* p = static_cast<const T*>(pool);
    if (headDim == 64) {
      dispatchGroup<T, 64>(group, stream, step, p, cache, layer, q, numKvHeads, scale, slidingWindow, softcap, alibiSlopes, out, split, splits);
    } else {
      dispatchGroup<T, 128>(group, stream, step, p, cache, layer, q, numKvHeads, scale, slidingWindow, softcap, alibiSlopes, out, split, splits);
    }
  });
}

}  // namespace cuda
}  // namespace kiln
