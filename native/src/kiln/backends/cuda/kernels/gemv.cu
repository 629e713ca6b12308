// Small-batch linear layers (decode): y[r, n] = x[r, :] . w[n, :] (+ bias[n]) for up to kMaxGemvRows rows,
// 16-bit weights and inputs. At these batch sizes a linear is a stream of its weights, and cuBLASLt's
// GEMM tiles leave bandwidth on the table. Here one warp owns one output feature (or two): its lanes read
// the weight row in 16-byte vectors (8 elements), kInFlight of them per lane and round, the next round's
// loads issued before the current one is used; each vector is applied to every row of x (x is small and
// stays in L1/L2), accumulating in float32; a warp reduction gives the feature. No shared memory and no
// block barrier. The first weights are loaded before the kernel waits for its predecessor
// (waitForPriorKernels, common.cuh): weights depend on nothing, so their first loads overlap the end of
// the kernel before (typically a norm or attention).
#include <algorithm>
#include <cstdlib>
#include <map>
#include <string>
#include <tuple>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kiln/backends/cuda/kernels/common.cuh"
#include "kiln/backends/cuda/kernels/kernels.h"
#include "kiln/backends/cuda/kernels/weight_formats.cuh"

namespace kiln {
namespace cuda {

namespace {

constexpr int kWarps = 8;  // features per block
constexpr int kThreads = 32 * kWarps;
// 16-byte weight vectors per lane and feature per round. Few, so that a thread needs few registers: on an
// H200 a GEMV of TinyLlama's shapes with 2 ran at 85-95% of a plain streaming read of the same bytes, and
// 15-35% slower with 8 (tools/gpu/gemv-bench.cu, docs/benchmarks.md, session 8).
constexpr int kInFlight = 2;

// Eight consecutive elements of x at element offset i (16-byte aligned) as float32.
__device__ __forceinline__ void load8(const void* x, DType t, int64_t i, float* f) {
  if (t == DType::F32) {
    const float4 a = *reinterpret_cast<const float4*>(static_cast<const float*>(x) + i);
    const float4 b = *reinterpret_cast<const float4*>(static_cast<const float*>(x) + i + 4);
    f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
  } else if (t == DType::BF16) {
    vectorToFloats(*reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(x) + i), static_cast<const __nv_bfloat16*>(nullptr), f);
  } else {
    vectorToFloats(*reinterpret_cast<const uint4*>(static_cast<const __half*>(x) + i), static_cast<const __half*>(nullptr), f);
  }
}

// The GEMV's input rows as stored (x of the weights' type T).
template <typename T>
struct PlainX {
  const T* x;
  int64_t stride;
  __device__ __forceinline__ void vector(int r, int64_t i, float* f) const {
    vectorToFloats(*reinterpret_cast<const uint4*>(x + r * stride + i * 8), static_cast<const T*>(nullptr), f);
  }
};

// The GEMV's input rows as float32 in shared memory: FP8's, quantized and widened again, times 2^100
// (Fp8Weights::kQuantizesX, weight_formats.cuh).
struct FloatX {
  const float* x;
  int64_t stride;
  __device__ __forceinline__ void vector(int r, int64_t i, float* f) const {
    const float4 a = *reinterpret_cast<const float4*>(x + r * stride + i * 8);
    const float4 b = *reinterpret_cast<const float4*>(x + r * stride + i * 8 + 4);
    f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
  }
};

// kRows output features per warp (consecutive, or a SwiGLU / rope pair), each with a float32 accumulator
// per row of x. W is the weights' format (weight_formats.cuh: 16-bit, int8 or int4 rows of 16-byte
// vectors). Each lane streams kInFlight vectors of every feature per round, double-buffered: the next
// round's loads (and int4's group scales) are issued before the current round is used, and each x vector
// is loaded once for all kRows features. int8's row scales are loaded with the first round and applied by
// reduce().
template <typename W, int R, int kRows, int kIn = kInFlight>
struct WarpRows {
  static constexpr int kChunks = W::kElems / 8;  // 8-element x vectors per weight vector
  W weights;
  int lane;
  int64_t begin, vectors;  // this warp's vectors of each row: [begin, vectors)
  int64_t feature[kRows];
  const uint4* wRow[kRows];
  int64_t rowVectors[kRows];  // 0 for an inactive feature (< 0): the last block's spare warps load nothing
  uint4 wv[kRows][kIn];
  float sv[kRows][kIn];  // the vectors' scales (int4)
  float rowScale[kRows];
  float acc[kRows][R];

  // The first round of each row: issued before the kernel waits for its predecessor.
  // part / parts: split-K, this warp's share of each row (parts > 1: the caller adds the parts' sums).
  __device__ __forceinline__ WarpRows(const W& w, const int64_t (&features)[kRows], int64_t K, int part = 0, int parts = 1)
      : weights(w) {
    lane = threadIdx.x & 31;
    const int64_t all = K / W::kElems, per = (all + parts - 1) / parts;
    begin = min(all, part * per);
    vectors = min(all, begin + per);
#pragma unroll
    for (int j = 0; j < kRows; ++j) {
      const bool active = features[j] >= 0;
      feature[j] = active ? features[j] : 0;
      wRow[j] = weights.row(feature[j]);
      rowVectors[j] = active ? vectors : 0;
      rowScale[j] = active ? weights.rowScale(feature[j]) : 0.0f;
#pragma unroll
      for (int r = 0; r < R; ++r) acc[j][r] = 0.0f;
    }
    load(begin, wv, sv);
  }

  __device__ __forceinline__ void load(int64_t base, uint4 (&to)[kRows][kIn], float (&scales)[kRows][kIn]) const {
#pragma unroll
    for (int j = 0; j < kRows; ++j)
#pragma unroll
      for (int u = 0; u < kIn; ++u) {
        const int64_t i = base + lane + 32 * u;
        if (i < rowVectors[j]) {
          to[j][u] = loadStreaming(wRow[j] + i);
          if constexpr (W::kVectorScales) scales[j][u] = weights.vectorScale(feature[j], i);
        }
      }
  }

  // The rest of the rows, applied to the rows of x (Src: PlainX, over global or shared memory).
  template <typename Src>
  __device__ __forceinline__ void run(const Src& x) {
    constexpr int64_t kRound = 32 * kIn;
    for (int64_t base = begin; base < vectors; base += kRound) {
      uint4 next[kRows][kIn];
      float nextScales[kRows][kIn];
      load(base + kRound, next, nextScales);
#pragma unroll
      for (int u = 0; u < kIn; ++u) {
        const int64_t i = base + lane + 32 * u;
        if (i >= vectors) continue;
        // A scaled format sums each vector on its own, then adds it times its scale; the others add into
        // the accumulators directly.
        float part[kRows][R];
#pragma unroll
        for (int j = 0; j < kRows; ++j)
#pragma unroll
          for (int r = 0; r < R; ++r) part[j][r] = W::kVectorScales ? 0.0f : acc[j][r];
#pragma unroll
        for (int c = 0; c < kChunks; ++c) {
          float wf[kRows][8];
#pragma unroll
          for (int j = 0; j < kRows; ++j) weights.decode(wv[j][u], c, wf[j]);
#pragma unroll
          for (int r = 0; r < R; ++r) {
            float xf[8];
            x.vector(r, i * kChunks + c, xf);
#pragma unroll
            for (int j = 0; j < kRows; ++j) {
              if (i >= rowVectors[j]) continue;
              float s = part[j][r];
#pragma unroll
              for (int e = 0; e < 8; ++e) s = fmaf(wf[j][e], xf[e], s);
              part[j][r] = s;
            }
          }
        }
#pragma unroll
        for (int j = 0; j < kRows; ++j)
#pragma unroll
          for (int r = 0; r < R; ++r) acc[j][r] = W::kVectorScales ? fmaf(part[j][r], sv[j][u], acc[j][r]) : part[j][r];
      }
#pragma unroll
      for (int j = 0; j < kRows; ++j)
#pragma unroll
        for (int u = 0; u < kIn; ++u) {
          wv[j][u] = next[j][u];
          if constexpr (W::kVectorScales) sv[j][u] = nextScales[j][u];
        }
    }
  }

  // Reduces the accumulators: afterwards lane r < R holds row r's dot product of feature j in out[j].
  __device__ __forceinline__ void reduce(float (&out)[kRows]) {
#pragma unroll
    for (int j = 0; j < kRows; ++j) {
#pragma unroll
      for (int r = 0; r < R; ++r) acc[j][r] = warpSum(acc[j][r]);
      // acc is indexed by compile-time r, so pick lane's row out with a loop.
      float v = 0.0f;
#pragma unroll
      for (int r = 0; r < R; ++r)
        if (r == lane) v = acc[j][r];
      out[j] = v * rowScale[j];
    }
  }
};

// Stores feature j's result of lane's row (+ bias, + extra[j]: the residual, or 0).
template <int R, int kRows>
__device__ __forceinline__ void storeFeatures(const int64_t (&features)[kRows], const float (&dot)[kRows], const float* bias,
                                              const float (&extra)[kRows], Matrix y) {
  const int lane = threadIdx.x & 31;
  if (lane >= R) return;
#pragma unroll
  for (int j = 0; j < kRows; ++j) {
    const int64_t n = features[j];
    if (n < 0) continue;
    const float v = bias ? dot[j] + bias[n] : dot[j];
    cuda::store(y.data, y.dtype, lane * y.stride + n, v + extra[j]);
  }
}

// kSplit > 1: split-K, kSplit consecutive warps share a feature's row (blocks of kWarps * kSplit warps), and
// their sums meet in shared memory. It keeps a narrow layer's rows in flight with twice the warps (on the
// H200, a 2048 x 5632 bfloat16 GEMV took 7.15 us against 7.94, tools/gpu/gemv-bench.cu).
// W: the weights' format (weight_formats.cuh): 16-bit weights of x's type T, or int8 / int4 ones with
// bfloat16 x (gemvQuantized, one row).
template <typename T, typename W, int R, int kRows, int kSplit, int kIn = kInFlight>
__global__ void __launch_bounds__(kThreads * kSplit) gemvKernel(const T* __restrict__ x, int64_t xStride, W w,
                                                                int64_t N, int64_t K, const float* __restrict__ bias, Matrix y) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, part = warp % kSplit;
  int64_t features[kRows];
  const int64_t first = (static_cast<int64_t>(blockIdx.x) * kWarps + warp / kSplit) * kRows;
#pragma unroll
  for (int j = 0; j < kRows; ++j) features[j] = first + j < N ? first + j : -1;
  WarpRows<W, R, kRows, kIn> rows(w, features, K, part, kSplit);
  startAfterPriorKernels();
  rows.run(PlainX<T>{x, xStride});
  float dot[kRows], zero[kRows];
  rows.reduce(dot);
#pragma unroll
  for (int j = 0; j < kRows; ++j) zero[j] = 0.0f;
  if constexpr (kSplit > 1) {
    __shared__ float partial[kWarps * kSplit][kRows][R];
    if (lane < R) {
#pragma unroll
      for (int j = 0; j < kRows; ++j) partial[warp][j][lane] = dot[j];
    }
    __syncthreads();
    if (part != 0) return;
#pragma unroll
    for (int j = 0; j < kRows; ++j) {
      if (lane >= R) continue;
#pragma unroll
      for (int p = 1; p < kSplit; ++p) dot[j] += partial[warp + p][j][lane];
    }
  }
  storeFeatures<R, kRows>(features, dot, bias, zero, y);
}

// --- The fused linear (gemvFused): a norm prologue and a residual, SwiGLU or rope epilogue. ---

enum class Epi : int { Store, Swiglu, Rope };

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

// The rope epilogue's pair p of [q | k | v] (p < N / 2): its two features, and the rotary frequency index
// (-1: stored as computed: the non-rotary dimensions of a head, and v). Rotary pairs are those the rope
// op rotates together: (i, i + rotaryDim / 2) of a head, or (2i, 2i + 1) when interleaved.
__device__ __forceinline__ void ropePair(const GemvFusion& f, int64_t p, int64_t& f0, int64_t& f1, int64_t& freq) {
  const int64_t qPairs = f.qCols / 2, kPairs = f.kCols / 2;
  freq = -1;
  if (p >= qPairs + kPairs) {
    f0 = f.qCols + f.kCols + 2 * (p - qPairs - kPairs);
    f1 = f0 + 1;
    return;
  }
  const int64_t base = p < qPairs ? 0 : f.qCols;
  const int64_t local = p < qPairs ? p : p - qPairs;
  const int64_t headPairs = f.headDim / 2, half = f.rotaryDim / 2;
  const int64_t h = local / headPairs, t = local % headPairs;
  const int64_t head = base + h * f.headDim;
  if (t < half) {
    f0 = head + (f.interleaved ? 2 * t : t);
    f1 = head + (f.interleaved ? 2 * t + 1 : t + half);
    freq = t;
  } else {
    f0 = head + f.rotaryDim + 2 * (t - half);
    f1 = f0 + 1;
  }
}

// Stores feature n (< qCols: q' in y; then k' in ropedK; then the rest, v first, in the product), and k' and v
// also into the KV cache rows at element offsets kvAt[0] (K) and kvAt[1] (V) when f.kvLayer >= 0.
__device__ __forceinline__ void storeQkv(const GemvFusion& f, Matrix y, int r, int64_t n, float v, const int64_t (&kvAt)[2]) {
  if (n < f.qCols) {
    cuda::store(y.data, y.dtype, r * y.stride + n, v);
  } else if (n < f.qCols + f.kCols) {
    cuda::store(f.ropedK.data, f.ropedK.dtype, r * f.ropedK.stride + (n - f.qCols), v);
    if (f.kvLayer >= 0) cuda::store(f.kvPool, f.kvDType, kvAt[0] + (n - f.qCols), v);
  } else {
    cuda::store(f.v.data, f.v.dtype, r * f.v.stride + (n - f.qCols - f.kCols), v);
    // The product may hold more than v after it (a parallel block's MLP input: falcon, phi).
    if (f.kvLayer >= 0 && n - f.qCols - f.kCols < f.kCols) cuda::store(f.kvPool, f.kvDType, kvAt[1] + (n - f.qCols - f.kCols), v);
  }
}

// The RMSNorm prologue's rows, normed into shared memory xs [R][K] as rmsNormKernel would store them:
// T((x * inv) * (offset + w)). Each thread issues all its loads at once (a vector of 8 elements, up to
// kNormVectors per row) so that the block waits for one L2 round trip, not one per element; the norm's
// weights (g) were loaded before the kernel waited for its predecessor.
constexpr int kNormVectors = 2;  // K <= 8 * threads * kNormVectors: 4096 for 8-warp blocks, 2048 for 4
constexpr int64_t kMaxNormK = 8 * kThreads * kNormVectors;

template <typename T, int R, int kBlockThreads>
__device__ __forceinline__ void normRowsToShared(const GemvFusion& f, ConstMatrix x, int64_t K,
                                                 const float (&g)[kNormVectors][8], T* xs, float* reduce) {
  const int64_t vectors = K / 8;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    float v[kNormVectors][8], e[kNormVectors][8];
#pragma unroll
    for (int u = 0; u < kNormVectors; ++u) {
      const int64_t i = threadIdx.x + static_cast<int64_t>(u) * kBlockThreads;
      if (i < vectors) {
        load8(x.data, x.dtype, r * x.stride + i * 8, v[u]);
        if (f.addend.data) load8(f.addend.data, f.addend.dtype, r * f.addend.stride + i * 8, e[u]);
      }
    }
    // add_rms_norm: the sum, stored by block 0 (as addRmsNormKernel stores it), rounded as stored.
    if (f.addend.data) {
#pragma unroll
      for (int u = 0; u < kNormVectors; ++u) {
        const int64_t i = threadIdx.x + static_cast<int64_t>(u) * kBlockThreads;
        if (i >= vectors) continue;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const float sum = v[u][j] + e[u][j];
          if (blockIdx.x == 0) cuda::store(f.sum.data, f.sum.dtype, r * f.sum.stride + i * 8 + j, sum);
          v[u][j] = roundTo(f.sum.dtype, sum);
        }
      }
    }
    float sq = 0.0f;
#pragma unroll
    for (int u = 0; u < kNormVectors; ++u) {
      const int64_t i = threadIdx.x + static_cast<int64_t>(u) * kBlockThreads;
#pragma unroll
      for (int j = 0; j < 8; ++j) sq += i < vectors ? v[u][j] * v[u][j] : 0.0f;
    }
    const float inv = 1.0f / sqrtf(blockSum(sq, reduce) / static_cast<float>(K) + f.normEps);
#pragma unroll
    for (int u = 0; u < kNormVectors; ++u) {
      const int64_t i = threadIdx.x + static_cast<int64_t>(u) * kBlockThreads;
      if (i >= vectors) continue;
      alignas(16) T out[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) out[j] = fromF<T>((v[u][j] * inv) * g[u][j]);
      *reinterpret_cast<uint4*>(xs + r * K + i * 8) = *reinterpret_cast<const uint4*>(out);
    }
  }
  __syncthreads();
}

// The features of slot `slot` (a warp's share: kRows consecutive features, a SwiGLU pair (gate, up) or a
// rope pair; -1 past the end), and the pair's rotary frequency index (rope; else -1).
template <int kRows, Epi kEpi>
__device__ __forceinline__ void slotFeatures(const GemvFusion& f, int64_t N, int64_t slot, int64_t (&features)[kRows], int64_t& freq) {
  freq = -1;
  if constexpr (kEpi == Epi::Store) {
#pragma unroll
    for (int j = 0; j < kRows; ++j) features[j] = slot * kRows + j < N ? slot * kRows + j : -1;
  } else if constexpr (kEpi == Epi::Swiglu) {
    features[0] = slot < N / 2 ? slot : -1;
    features[1] = slot < N / 2 ? slot + N / 2 : -1;
  } else {
    if (slot < N / 2) {
      ropePair(f, slot, features[0], features[1], freq);
    } else {
      features[0] = features[1] = -1;
    }
  }
}

// T: the activations' type (x after the norm prologue, or x itself); W: the weights' format.
//
// The grid is persistent (launchFused: as many blocks as fit the GPU at once): each block takes its
// slots in turn, block-strided, so that the norm prologue (a round trip to L2 for x, a block reduction,
// x normed into shared memory) is paid once per block rather than once per wave of blocks (TinyLlama's
// gate/up GEMV was 5 waves of 2 blocks an SM: 22.9 us for 46 MB, against 14 us for the same weights
// without the prologue; ncu, session 10). The next slot's first weights are requested before the
// current slot's sums are reduced and stored, so that a warp's stream does not stop between slots.
// (Split-K over two warps per slot, as the unfused GEMV does, was 2-5% slower here: session 10.)
template <typename T, typename W, int R, int kRows, bool kNorm, Epi kEpi, int kBlockWarps, int kIn = kInFlight>
__global__ void __launch_bounds__(32 * kBlockWarps) gemvFusedKernel(ConstMatrix x, W w, int64_t N, int64_t K,
                                                            const float* __restrict__ bias, GemvFusion f, Matrix y) {
  extern __shared__ uint4 dynamicShared[];
  __shared__ float reduce[32];
  __shared__ float outScale[R];  // FP8: aScale_r * wScale (kiln/fp8.h), times 2^20 (weight_formats.cuh)
  constexpr int kBlockThreads = 32 * kBlockWarps;
  constexpr int kSlotsPerBlock = kBlockWarps;
  const int lane = threadIdx.x & 31;
  const int64_t slots = kEpi == Epi::Store ? (N + kRows - 1) / kRows : N / 2;
  const int64_t slotStride = static_cast<int64_t>(gridDim.x) * kSlotsPerBlock;
  int64_t slot = static_cast<int64_t>(blockIdx.x) * kSlotsPerBlock + (threadIdx.x >> 5);
  int64_t features[kRows];
  int64_t freq;
  slotFeatures<kRows, kEpi>(f, N, slot, features, freq);
  // Before the wait: the first round of weights and the norm's weights (they depend on no kernel).
  WarpRows<W, R, kRows, kIn> rows(w, features, K);
  float g[kNormVectors][8];
  if constexpr (kNorm) {
#pragma unroll
    for (int u = 0; u < kNormVectors; ++u) {
      const int64_t i = threadIdx.x + static_cast<int64_t>(u) * kBlockThreads;
      if (i < K / 8) {
        load8(f.normWeight, f.normWDType, i * 8, g[u]);
#pragma unroll
        for (int j = 0; j < 8; ++j) g[u][j] += f.normWeightOffset;
      }
    }
  }
  startAfterPriorKernels();
  // The rope epilogue's cache rows of lane's token (device_step.h's DeviceKv layout, PagedCache::row):
  // the same for every slot.
  int64_t kvAt[2] = {0, 0};
  if constexpr (kEpi == Epi::Rope) {
    if (lane < R && f.kvLayer >= 0) {
      const int32_t position = f.positions[lane];
      const int32_t block = f.blockTables[static_cast<int64_t>(f.tokenSeq[lane]) * f.blockTableStride + position / f.kvTokensPerBlock];
      const int64_t rowSize = f.kCols;
      const int64_t at = ((static_cast<int64_t>(block) * f.kvNumLayers + f.kvLayer) * 2) * f.kvTokensPerBlock * rowSize +
                         (position % f.kvTokensPerBlock) * rowSize;
      kvAt[0] = at;
      kvAt[1] = at + f.kvTokensPerBlock * rowSize;
    }
  }
  const T* xs = static_cast<const T*>(x.data);
  int64_t xStride = x.stride;
  if constexpr (kNorm) {
    T* normed = reinterpret_cast<T*>(dynamicShared);
    normRowsToShared<T, R, kBlockThreads>(f, x, K, g, normed, reduce);
    xs = normed;
    xStride = K;
  }
  // FP8: each row (normed, or as given) quantized once per block into shared memory after the normed rows,
  // widened and scaled (weight_formats.cuh).
  float* xFloat = reinterpret_cast<float*>(reinterpret_cast<char*>(dynamicShared) + (kNorm ? R * K * static_cast<int64_t>(sizeof(T)) : 0));
  if constexpr (W::kQuantizesX) {
    const float wScale = w.tensorScale();
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float aScale = quantizeRowFp8Scaled(xs + r * xStride, K, xFloat + r * K, reduce);
      if (threadIdx.x == 0) outScale[r] = (aScale * wScale) * kFp8SumScale;
    }
    __syncthreads();
  }
  // A warp past the last slot has no features and loads nothing.
  for (int64_t first = static_cast<int64_t>(blockIdx.x) * kSlotsPerBlock; first < slots; first += slotStride) {
    // What the epilogue reads besides the dot products, loaded now so that it arrives while the weights
    // stream: the residual, or rope's (cos, sin) at lane's row position.
    float extra[kRows];
#pragma unroll
    for (int j = 0; j < kRows; ++j) extra[j] = 0.0f;
    float c = 1.0f, sn = 0.0f;
    if (lane < R) {
      if constexpr (kEpi == Epi::Store) {
        if (f.residual.data) {
#pragma unroll
          for (int j = 0; j < kRows; ++j)
            if (features[j] >= 0) extra[j] = load(f.residual.data, f.residual.dtype, lane * f.residual.stride + features[j]);
        }
      } else if constexpr (kEpi == Epi::Rope) {
        if (freq >= 0) {
          // As ropeKernel: the table's (cos, sin) x attentionScaling below tablePositions, else computed.
          const int32_t position = f.positions[lane];
          if (f.cosSin != nullptr && position >= 0 && position < f.tablePositions) {
            const float2 cs = reinterpret_cast<const float2*>(f.cosSin)[position * (f.rotaryDim / 2) + freq];
            c = cs.x;
            sn = cs.y;
          } else {
            const float angle = static_cast<float>(position) * f.invFreq[freq];
            c = static_cast<float>(cos(static_cast<double>(angle))) * f.attentionScaling;
            sn = static_cast<float>(sin(static_cast<double>(angle))) * f.attentionScaling;
          }
        }
      }
    }
    if constexpr (W::kQuantizesX) {
      rows.run(FloatX{xFloat, K});
    } else {
      rows.run(PlainX<T>{xs, xStride});
    }
    // The next slot's features and first round, before this slot's reduction and stores.
    const int64_t nextSlot = slot + slotStride;
    int64_t nextFeatures[kRows];
    int64_t nextFreq;
    slotFeatures<kRows, kEpi>(f, N, nextSlot, nextFeatures, nextFreq);
    WarpRows<W, R, kRows, kIn> next(w, nextFeatures, K);
    float dot[kRows];
    rows.reduce(dot);
    if constexpr (W::kQuantizesX) {
      const float scale = lane < R ? outScale[lane] : 0.0f;
#pragma unroll
      for (int j = 0; j < kRows; ++j) dot[j] *= scale;
    }
    if constexpr (kEpi == Epi::Store) {
      storeFeatures<R, kRows>(features, dot, bias, extra, y);
    } else if (lane < R && features[0] >= 0) {
      const float a = bias ? dot[0] + bias[features[0]] : dot[0];
      const float b = bias ? dot[1] + bias[features[1]] : dot[1];
      if constexpr (kEpi == Epi::Swiglu) {
        cuda::store(y.data, y.dtype, lane * y.stride + features[0], silu(a) * b);
      } else if (freq < 0) {
        storeQkv(f, y, lane, features[0], a, kvAt);
        storeQkv(f, y, lane, features[1], b, kvAt);
      } else {
        storeQkv(f, y, lane, features[0], a * c - b * sn, kvAt);
        storeQkv(f, y, lane, features[1], b * c + a * sn, kvAt);
      }
    }
    rows = next;
    slot = nextSlot;
#pragma unroll
    for (int j = 0; j < kRows; ++j) features[j] = nextFeatures[j];
    freq = nextFreq;
  }
}

// Blocks of `kernel` (threads, dynamic shared bytes) resident on the current device at once; the
// occupancy query per (device, kernel, shared size) is made once per thread. KILN_CUDA_FUSED_WAVES=N
// multiplies it (comparisons: a large N gives every slot group its own block, as before session 10).
int64_t residentBlocks(const void* kernel, int threads, size_t shared) {
  static const int64_t waves = [] {
    const char* setting = std::getenv("KILN_CUDA_FUSED_WAVES");
    const long long n = setting ? std::atoll(setting) : 1;
    return static_cast<int64_t>(n < 1 ? 1 : n);
  }();
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 1;
  thread_local std::map<std::tuple<int, const void*, size_t>, int64_t> known;
  const auto key = std::make_tuple(device, kernel, shared);
  const auto found = known.find(key);
  if (found != known.end()) return found->second;
  int perSm = 0, sms = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&perSm, kernel, threads, shared) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    (void)cudaGetLastError();
    throw std::runtime_error("cuda gemvFused: cannot query the occupancy of a fused GEMV kernel");
  }
  const int64_t blocks = std::max<int64_t>(1, static_cast<int64_t>(perSm) * sms) * waves;
  known.emplace(key, blocks);
  return blocks;
}

// Split-K for the narrow unfused GEMVs (o and down projections) of one or two rows: 2 (default) or 1,
// KILN_CUDA_GEMV_SPLIT (read once per process, for comparisons).
int gemvSplitK() {
  static const int split = [] {
    const char* setting = std::getenv("KILN_CUDA_GEMV_SPLIT");
    return setting && std::string(setting) == "1" ? 1 : 2;
  }();
  return split;
}

// Vectors a lane loads per round in the batch-1 GEMV of long rows (K >= 4096: the down projection), where
// a warp walks its share of a row in serial rounds: KILN_CUDA_GEMV_LONG_INFLIGHT=4|8 (bfloat16; int8 and
// int4 take 4), otherwise kInFlight. Off by default: written in session 14 after its device time was spent,
// from tools/gpu/layer-chain-bench.cu's narrow down GEMV (4.25 us of serial rounds at 64 features);
// measure it there and in decode-sweep before changing the default. Read once per process.
int longRowInFlight() {
  static const int n = [] {
    const char* setting = std::getenv("KILN_CUDA_GEMV_LONG_INFLIGHT");
    const int v = setting ? std::atoi(setting) : 0;
    return v == 4 || v == 8 ? v : 0;
  }();
  return n;
}

// Vectors a lane loads per round in the batch-1 SwiGLU (gate/up) GEMV: KILN_CUDA_SWIGLU_INFLIGHT=4 (bfloat16,
// int8, FP8), otherwise kInFlight: half the serial rounds a warp takes over its rows. Off by default:
// written in session 14 after its device time was spent; measure with tools/gpu/layer-chain-bench.cu and
// decode-sweep first. Read once per process.
int swigluInFlight() {
  static const int n = [] {
    const char* setting = std::getenv("KILN_CUDA_SWIGLU_INFLIGHT");
    return setting && std::string(setting) == "4" ? 4 : kInFlight;
  }();
  return n;
}

// Vectors a lane loads per round in the batch-1 QKV GEMV: 4 (default), or KILN_CUDA_QKV_INFLIGHT=2 / 8
// (read once per process, for comparisons).
int qkvInFlight() {
  static const int n = [] {
    const char* setting = std::getenv("KILN_CUDA_QKV_INFLIGHT");
    const int v = setting ? std::atoi(setting) : 4;
    return v == 2 || v == 8 ? v : 4;
  }();
  return n;
}

// Two features per warp (x loaded once for both) for the wide layers of one or two rows (the LM head).
template <int R>
bool twoFeaturesPerWarp(int64_t N, int64_t K) {
  return R <= 2 && N >= 4096;
}

template <typename T, int R>
void launchRows(cudaStream_t stream, const T* x, int64_t xStride, const T* w, int64_t N, int64_t K, const float* bias,
                Matrix y) {
  const unsigned blocks = static_cast<unsigned>((N + kWarps - 1) / kWarps);
  const DenseWeights<T> dense{w, K};
  if (twoFeaturesPerWarp<R>(N, K)) {
    const unsigned pairBlocks = static_cast<unsigned>((N + 2 * kWarps - 1) / (2 * kWarps));
    launch(gemvKernel<T, DenseWeights<T>, R, 2, 1>, dim3(pairBlocks), dim3(kThreads), 0, stream, x, xStride, dense, N, K, bias, y);
  } else if (R == 1 && gemvSplitK() == 2 && K >= 4096 && longRowInFlight() == 4) {
    launch(gemvKernel<T, DenseWeights<T>, R, 1, 2, 4>, dim3(blocks), dim3(2 * kThreads), 0, stream, x, xStride, dense, N, K, bias, y);
  } else if (R == 1 && gemvSplitK() == 2 && K >= 4096 && longRowInFlight() == 8) {
    launch(gemvKernel<T, DenseWeights<T>, R, 1, 2, 8>, dim3(blocks), dim3(2 * kThreads), 0, stream, x, xStride, dense, N, K, bias, y);
  } else if (R <= 2 && gemvSplitK() == 2) {
    launch(gemvKernel<T, DenseWeights<T>, R, 1, 2>, dim3(blocks), dim3(2 * kThreads), 0, stream, x, xStride, dense, N, K, bias, y);
  } else {
    launch(gemvKernel<T, DenseWeights<T>, R, 1, 1>, dim3(blocks), dim3(kThreads), 0, stream, x, xStride, dense, N, K, bias, y);
  }
}

// Split-K of the batch-1 int8 / int4 GEMV (gemvQuantized): KILN_CUDA_QUANTIZED_GEMV_SPLIT = 1, 2 or 4 warps
// a feature, 0 for the per-format kernels gemvInt8 / gemvInt4 (read once per process). Default 2: on an H100
// (session 14) the issue-10 model's batch-1 decode took 0.905 ms/token with 2 against 1.086 with the
// per-format kernels for int8 and 1.161 against 1.403 for int4 (4 warps: 0.974 and 1.270), since the
// per-format kernels left too few bytes in flight (docs/benchmarks.md).
int quantizedGemvSplit() {
  static const int split = [] {
    const char* setting = std::getenv("KILN_CUDA_QUANTIZED_GEMV_SPLIT");
    const int v = setting && *setting ? std::atoi(setting) : 2;
    return v == 1 || v == 2 || v == 4 ? v : 0;
  }();
  return split;
}

template <typename W>
void launchQuantizedRow(cudaStream_t stream, const __nv_bfloat16* x, const W& w, int64_t N, int64_t K, const float* bias, Matrix y) {
  using T = __nv_bfloat16;
  const unsigned blocks = static_cast<unsigned>((N + kWarps - 1) / kWarps);
  switch (quantizedGemvSplit()) {
    case 4: return launch(gemvKernel<T, W, 1, 1, 4>, dim3(blocks), dim3(4 * kThreads), 0, stream, x, int64_t{K}, w, N, K, bias, y);
    case 1: return launch(gemvKernel<T, W, 1, 1, 1>, dim3(blocks), dim3(kThreads), 0, stream, x, int64_t{K}, w, N, K, bias, y);
    default:
      if (K >= 4096 && longRowInFlight() == 4) {
        return launch(gemvKernel<T, W, 1, 1, 2, 4>, dim3(blocks), dim3(2 * kThreads), 0, stream, x, int64_t{K}, w, N, K, bias, y);
      }
      return launch(gemvKernel<T, W, 1, 1, 2>, dim3(blocks), dim3(2 * kThreads), 0, stream, x, int64_t{K}, w, N, K, bias, y);
  }
}

template <typename T, typename W, int R, bool kNorm>
void launchFusedRows(cudaStream_t stream, ConstMatrix x, const W& w, int64_t N, int64_t K, const float* bias,
                     const GemvFusion& f, Matrix y) {
  // Dynamic shared memory: the normed rows (a norm prologue), then FP8's quantized rows as float32.
  const size_t shared = (kNorm ? static_cast<size_t>(R * K) * sizeof(T) : 0) + (W::kQuantizesX ? static_cast<size_t>(R * K) * 4 : 0);
  // gemvFusedKernel's persistent grid: a block per slotsPerBlock slots, but no more blocks than are
  // resident at once.
  const auto go = [&](auto kernel, int64_t slots, int slotsPerBlock, int threads) {
    const int64_t wanted = (slots + slotsPerBlock - 1) / slotsPerBlock;
    const int64_t resident = residentBlocks(reinterpret_cast<const void*>(kernel), threads, shared);
    launch(kernel, dim3(static_cast<unsigned>(std::max<int64_t>(1, std::min(wanted, resident)))), dim3(threads), shared, stream, x, w, N, K,
           bias, f, y);
  };
  switch (f.epilogue) {
    case GemvFusion::Swiglu:
      if constexpr (R == 1 && !W::kVectorScales) {
        if (swigluInFlight() == 4) return go(gemvFusedKernel<T, W, R, 2, kNorm, Epi::Swiglu, kWarps, 4>, N / 2, kWarps, kThreads);
      }
      return go(gemvFusedKernel<T, W, R, 2, kNorm, Epi::Swiglu, kWarps>, N / 2, kWarps, kThreads);
    case GemvFusion::Rope:
      // QKV is narrow (a warp per rope pair: 1,280 warps for TinyLlama): 4-warp blocks spread it over
      // twice as many blocks, so that every SM gets a share (8-warp blocks left 160 for 132 SMs). With
      // one warp per slot there is no next slot to overlap, so a lane asks for more of its rows at once
      // (qkvInFlight vectors a round: 4 takes a 2048-wide bfloat16 row in two rounds, the first before
      // the wait for the kernel before).
      if (!kNorm || K <= 8 * 128 * kNormVectors) {
        if constexpr (R == 1 && !W::kVectorScales) {  // (int4's 2048-wide rows take one round already)
          if (qkvInFlight() == 4) return go(gemvFusedKernel<T, W, R, 2, kNorm, Epi::Rope, 4, 4>, N / 2, 4, 128);
          if (qkvInFlight() == 8) return go(gemvFusedKernel<T, W, R, 2, kNorm, Epi::Rope, 4, 8>, N / 2, 4, 128);
        }
        return go(gemvFusedKernel<T, W, R, 2, kNorm, Epi::Rope, 4>, N / 2, 4, 128);
      }
      return go(gemvFusedKernel<T, W, R, 2, kNorm, Epi::Rope, kWarps>, N / 2, kWarps, kThreads);
    default:
      if (twoFeaturesPerWarp<R>(N, K)) return go(gemvFusedKernel<T, W, R, 2, kNorm, Epi::Store, kWarps>, (N + 1) / 2, kWarps, kThreads);
      return go(gemvFusedKernel<T, W, R, 1, kNorm, Epi::Store, kWarps>, N, kWarps, kThreads);
  }
}

template <typename T>
void launchGemv(cudaStream_t stream, const void* x, int64_t rows, int64_t xStride, const void* w, int64_t N, int64_t K,
                const float* bias, Matrix y) {
  const T* xt = static_cast<const T*>(x);
  const T* wt = static_cast<const T*>(w);
  switch (rows) {
#define KILN_ROWS(R) \
  case R: return launchRows<T, R>(stream, xt, xStride, wt, N, K, bias, y);
    KILN_ROWS(1) KILN_ROWS(2) KILN_ROWS(3) KILN_ROWS(4) KILN_ROWS(5) KILN_ROWS(6) KILN_ROWS(7) KILN_ROWS(8)
#undef KILN_ROWS
  }
}

// Rows up to kMaxRows (a kernel per row count; the quantized formats have only the batch-1 one).
template <typename W, bool kNorm, int kMaxRows>
void launchGemvFused(cudaStream_t stream, ConstMatrix x, int64_t rows, const W& w, int64_t N, int64_t K,
                     const float* bias, const GemvFusion& f, Matrix y) {
  using T = __nv_bfloat16;
  switch (rows) {
    case 1: return launchFusedRows<T, W, 1, kNorm>(stream, x, w, N, K, bias, f, y);
    case 2: if constexpr (kMaxRows >= 2) return launchFusedRows<T, W, 2, kNorm>(stream, x, w, N, K, bias, f, y); break;
    case 3: if constexpr (kMaxRows >= 3) return launchFusedRows<T, W, 3, kNorm>(stream, x, w, N, K, bias, f, y); break;
    case 4: if constexpr (kMaxRows >= 4) return launchFusedRows<T, W, 4, kNorm>(stream, x, w, N, K, bias, f, y); break;
  }
  throw std::runtime_error("cuda gemvFused: " + std::to_string(rows) + " rows for this weight format");
}

template <typename W, int kMaxRows>
void launchGemvFused(cudaStream_t stream, ConstMatrix x, int64_t rows, const W& w, int64_t N, int64_t K,
                     const float* bias, const GemvFusion& f, Matrix y) {
  f.normWeight != nullptr ? launchGemvFused<W, true, kMaxRows>(stream, x, rows, w, N, K, bias, f, y)
                          : launchGemvFused<W, false, kMaxRows>(stream, x, rows, w, N, K, bias, f, y);
}

}  // namespace

bool gemvApplies(DType t, const void* x, int64_t rows, int64_t xStride, const void* w, int64_t K) {
  const auto aligned16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return (t == DType::BF16 || t == DType::F16) && rows >= 1 && rows <= kMaxGemvRows && K % 8 == 0 &&
         xStride % 8 == 0 && aligned16(x) && aligned16(w);
}

bool gemvQuantizedApplies(DType t, DType xType, const void* x, int64_t rows, const void* w, int64_t K, int64_t groupSize) {
  const auto aligned16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const bool format = (t == DType::I8 && K % 16 == 0) || (t == DType::I4 && K % 32 == 0 && groupSize > 0 && groupSize % 32 == 0 && K % groupSize == 0);
  return quantizedGemvSplit() != 0 && format && xType == DType::BF16 && rows == 1 && aligned16(x) && aligned16(w);
}

void gemvQuantized(cudaStream_t stream, DType t, const void* x, const void* w, int64_t N, int64_t K, int64_t groupSize,
                   const float* bias, Matrix y) {
  const __nv_bfloat16* xs = static_cast<const __nv_bfloat16*>(x);
  if (t == DType::I8) return launchQuantizedRow(stream, xs, Int8Weights{static_cast<const int8_t*>(w), N, K}, N, K, bias, y);
  if (t == DType::I4) return launchQuantizedRow(stream, xs, Int4Weights{static_cast<const uint8_t*>(w), N, K, groupSize}, N, K, bias, y);
  throw std::runtime_error("cuda gemvQuantized: int8 or int4 weights only");
}

// FP8's x takes K float32 of shared memory in the fused kernel (32 KB here, beside a norm's 8 KB at most).
constexpr int64_t kMaxFp8FusedK = 8192;

bool gemvFusedApplies(DType t, ConstMatrix x, int64_t rows, const void* w, int64_t K, bool normPrologue) {
  const auto aligned16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  // Without a prologue x is the GEMV's bfloat16 operand; with one, any activation type (load8 reads 8
  // elements with 16-byte loads). bfloat16 weights take up to kMaxFusedGemvRows rows, int8 and int4
  // (W8A16, W4A16) one: the batch-1 step (more kernels per row count would cost compile time).
  const bool xType = normPrologue ? (x.dtype == DType::F32 || x.dtype == DType::BF16 || x.dtype == DType::F16) : x.dtype == DType::BF16;
  const bool format = (t == DType::BF16 && rows <= kMaxFusedGemvRows) || (t == DType::I8 && rows == 1 && K % 16 == 0) ||
                      (t == DType::I4 && rows == 1 && K % 32 == 0) || (t == DType::F8E4M3 && rows == 1 && K % 16 == 0 && K <= kMaxFp8FusedK);
  // (An add_rms_norm prologue's addend passes the same checks: gemvFusedApplies is asked for both.)
  return format && xType && rows >= 1 && K % 8 == 0 && x.stride % 8 == 0 && aligned16(x.data) && aligned16(w) &&
         (!normPrologue || K <= kMaxNormK);
}

void gemvFused(cudaStream_t stream, DType t, ConstMatrix x, int64_t rows, const void* w, int64_t N, int64_t K,
               const float* bias, const GemvFusion& f, Matrix y) {
  switch (t) {
    case DType::BF16:
      return launchGemvFused<DenseWeights<__nv_bfloat16>, kMaxFusedGemvRows>(
          stream, x, rows, DenseWeights<__nv_bfloat16>{static_cast<const __nv_bfloat16*>(w), K}, N, K, bias, f, y);
    case DType::I8:
      return launchGemvFused<Int8Weights, 1>(stream, x, rows, Int8Weights{static_cast<const int8_t*>(w), N, K}, N, K, bias, f, y);
    case DType::I4:
      if (f.groupSize <= 0 || f.groupSize % 32 != 0 || K % f.groupSize != 0) {
        throw std::runtime_error("cuda gemvFused: int4 group size " + std::to_string(f.groupSize) + " for K " + std::to_string(K));
      }
      return launchGemvFused<Int4Weights, 1>(stream, x, rows, Int4Weights{static_cast<const uint8_t*>(w), N, K, f.groupSize}, N,
                                             K, bias, f, y);
    case DType::F8E4M3:
      return launchGemvFused<Fp8Weights, 1>(stream, x, rows, Fp8Weights{static_cast<const uint8_t*>(w), N, K}, N, K, bias, f, y);
    default:
      throw std::runtime_error("cuda gemvFused: bfloat16, int8, int4 or float8_e4m3fn weights only");
  }
}

void gemv(cudaStream_t stream, DType t, const void* x, int64_t rows, int64_t xStride, const void* w, int64_t N,
          int64_t K, const float* bias, Matrix y) {
  if (t == DType::BF16) {
    launchGemv<__nv_bfloat16>(stream, x, rows, xStride, w, N, K, bias, y);
  } else {
    launchGemv<__half>(stream, x, rows, xStride, w, N, K, bias, y);
  }
}

}  // namespace cuda
}  // namespace kiln
