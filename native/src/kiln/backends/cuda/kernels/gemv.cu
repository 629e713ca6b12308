// Small-batch linear layers (decode): y[r, n] = x[r, :] . w[n, :] (+ bias[n]) for up to kMaxGemvRows rows,
// 16-bit weights and inputs. At these batch sizes a linear is a stream of its weights, and cuBLASLt's
// GEMM tiles leave bandwidth on the table. Here one warp owns one output feature: its lanes read the
// weight row in 16-byte vectors (8 elements), kInFlight of them per lane issued before any is used, so
// that a warp keeps 4 KB of loads in flight; each vector is applied to every row of x (x is small and
// stays in L1/L2), accumulating in float32; a warp reduction gives the feature. No shared memory and no
// block barrier. The first weights are loaded before the kernel waits for its predecessor
// (waitForPriorKernels, common.cuh): weights depend on nothing, so their first loads overlap the end of
// the kernel before (typically a norm or attention).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kiln/backends/cuda/kernels/common.cuh"
#include "kiln/backends/cuda/kernels/kernels.h"

namespace kiln {
namespace cuda {

namespace {

constexpr int kWarps = 8;  // features per block
constexpr int kThreads = 32 * kWarps;
constexpr int kInFlight = 8;  // 16-byte weight vectors per lane loaded ahead of use

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

// acc[r] += w . x[r] over one 8-element vector i of the row.
template <typename T, int R, typename Src>
__device__ __forceinline__ void accumulate(const uint4& wv, const Src& x, int64_t i, float* acc) {
  float wf[8];
  vectorToFloats(wv, static_cast<const T*>(nullptr), wf);
#pragma unroll
  for (int r = 0; r < R; ++r) {
    float xf[8];
    x.vector(r, i, xf);
    float s = acc[r];
#pragma unroll
    for (int j = 0; j < 8; ++j) s = fmaf(wf[j], xf[j], s);
    acc[r] = s;
  }
}

// kRows output features per warp (consecutive), each with a float32 accumulator per row of x.
// kRows = 2 keeps 8 KB of loads in flight per warp when a row is only one round of loads (K <= 2048):
// the wide layers (gate/up, the LM head) then run fewer, fuller waves. kRows = 1 double-buffers instead:
// the next round of the row is loaded while the current one is used (K > 2048, e.g. the down projection).
template <typename T, int R, int kRows>
struct WarpRows {
  int lane;
  int64_t vectors;
  const uint4* wRow[kRows];
  int64_t rowVectors[kRows];  // 0 for an inactive feature (< 0): the last block's spare warps load nothing
  uint4 wv[kRows][kInFlight];
  float acc[kRows][R];

  // The first round of each row: issued before the kernel waits for its predecessor.
  __device__ __forceinline__ WarpRows(const T* w, const int64_t (&features)[kRows], int64_t K) {
    lane = threadIdx.x & 31;
    vectors = K / 8;
#pragma unroll
    for (int j = 0; j < kRows; ++j) {
      const bool active = features[j] >= 0;
      wRow[j] = reinterpret_cast<const uint4*>(w + (active ? features[j] : 0) * K);
      rowVectors[j] = active ? vectors : 0;
#pragma unroll
      for (int r = 0; r < R; ++r) acc[j][r] = 0.0f;
    }
#pragma unroll
    for (int j = 0; j < kRows; ++j)
#pragma unroll
      for (int u = 0; u < kInFlight; ++u) {
        const int64_t i = lane + 32 * u;
        if (i < rowVectors[j]) wv[j][u] = loadStreaming(wRow[j] + i);
      }
  }

  // The rest of the rows, applied to the rows of x (Src: PlainX, over global or shared memory).
  template <typename Src>
  __device__ __forceinline__ void run(const Src& x) {
    constexpr int64_t kRound = 32 * kInFlight;
    if constexpr (kRows == 1) {
      uint4 next[kInFlight];
      for (int64_t base = 0; base < rowVectors[0]; base += kRound) {
#pragma unroll
        for (int u = 0; u < kInFlight; ++u) {
          const int64_t i = base + kRound + lane + 32 * u;
          if (i < rowVectors[0]) next[u] = loadStreaming(wRow[0] + i);
        }
#pragma unroll
        for (int u = 0; u < kInFlight; ++u) {
          const int64_t i = base + lane + 32 * u;
          if (i < rowVectors[0]) accumulate<T, R>(wv[0][u], x, i, acc[0]);
        }
#pragma unroll
        for (int u = 0; u < kInFlight; ++u) wv[0][u] = next[u];
      }
    } else {
      for (int64_t base = 0;; base += kRound) {
#pragma unroll
        for (int j = 0; j < kRows; ++j)
#pragma unroll
          for (int u = 0; u < kInFlight; ++u) {
            const int64_t i = base + lane + 32 * u;
            if (i < rowVectors[j]) accumulate<T, R>(wv[j][u], x, i, acc[j]);
          }
        if (base + kRound >= vectors) break;
#pragma unroll
        for (int j = 0; j < kRows; ++j)
#pragma unroll
          for (int u = 0; u < kInFlight; ++u) {
            const int64_t i = base + kRound + lane + 32 * u;
            if (i < rowVectors[j]) wv[j][u] = loadStreaming(wRow[j] + i);
          }
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
      out[j] = v;
    }
  }
};

// Consecutive features for warp w: kRows of them from w * kRows (-1 past N).
template <int kRows, int kBlockWarps = kWarps>
__device__ __forceinline__ void consecutiveFeatures(int64_t N, int64_t (&features)[kRows]) {
  const int64_t first = (static_cast<int64_t>(blockIdx.x) * kBlockWarps + (threadIdx.x >> 5)) * kRows;
#pragma unroll
  for (int j = 0; j < kRows; ++j) features[j] = first + j < N ? first + j : -1;
}

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

template <typename T, int R, int kRows>
__global__ void __launch_bounds__(kThreads) gemvKernel(const T* __restrict__ x, int64_t xStride, const T* __restrict__ w,
                                                       int64_t N, int64_t K, const float* __restrict__ bias, Matrix y) {
  int64_t features[kRows];
  consecutiveFeatures<kRows>(N, features);
  WarpRows<T, R, kRows> rows(w, features, K);
  startAfterPriorKernels();
  rows.run(PlainX<T>{x, xStride});
  float dot[kRows], zero[kRows];
  rows.reduce(dot);
#pragma unroll
  for (int j = 0; j < kRows; ++j) zero[j] = 0.0f;
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

template <typename T, int R, int kRows, bool kNorm, Epi kEpi, int kBlockWarps>
__global__ void __launch_bounds__(32 * kBlockWarps) gemvFusedKernel(ConstMatrix x, const T* __restrict__ w, int64_t N, int64_t K,
                                                            const float* __restrict__ bias, GemvFusion f, Matrix y) {
  extern __shared__ uint4 dynamicShared[];
  __shared__ float reduce[32];
  constexpr int kBlockThreads = 32 * kBlockWarps;
  const int64_t slot = static_cast<int64_t>(blockIdx.x) * kBlockWarps + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  int64_t features[kRows];
  int64_t freq = -1;
  if constexpr (kEpi == Epi::Store) {
    consecutiveFeatures<kRows, kBlockWarps>(N, features);
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
  // Before the wait: the first round of weights and the norm's weights (they depend on no kernel).
  WarpRows<T, R, kRows> rows(w, features, K);
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
  // What the epilogue reads besides the dot products, loaded now so that it arrives while the weights
  // stream: the residual, or rope's (cos, sin) at lane's row position.
  float extra[kRows];
#pragma unroll
  for (int j = 0; j < kRows; ++j) extra[j] = 0.0f;
  float c = 1.0f, sn = 0.0f;
  int64_t kvAt[2] = {0, 0};
  if (lane < R) {
    if constexpr (kEpi == Epi::Store) {
      if (f.residual.data) {
#pragma unroll
        for (int j = 0; j < kRows; ++j)
          if (features[j] >= 0) extra[j] = load(f.residual.data, f.residual.dtype, lane * f.residual.stride + features[j]);
      }
    } else if constexpr (kEpi == Epi::Rope) {
      if (f.kvLayer >= 0) {
        // The cache rows of lane's token (device_step.h's DeviceKv layout, PagedCache::row).
        const int32_t position = f.positions[lane];
        const int32_t block = f.blockTables[static_cast<int64_t>(f.tokenSeq[lane]) * f.blockTableStride + position / f.kvTokensPerBlock];
        const int64_t rowSize = f.kCols;
        const int64_t at = ((static_cast<int64_t>(block) * f.kvNumLayers + f.kvLayer) * 2) * f.kvTokensPerBlock * rowSize +
                           (position % f.kvTokensPerBlock) * rowSize;
        kvAt[0] = at;
        kvAt[1] = at + f.kvTokensPerBlock * rowSize;
      }
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
  if constexpr (kNorm) {
    T* xs = reinterpret_cast<T*>(dynamicShared);
    normRowsToShared<T, R, kBlockThreads>(f, x, K, g, xs, reduce);
    rows.run(PlainX<T>{xs, K});
  } else {
    rows.run(PlainX<T>{static_cast<const T*>(x.data), x.stride});
  }
  float dot[kRows];
  rows.reduce(dot);
  if constexpr (kEpi == Epi::Store) {
    storeFeatures<R, kRows>(features, dot, bias, extra, y);
  } else {
    if (lane >= R || features[0] < 0) return;
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
}

// Two features per warp where a row is one round and there are features enough for several waves.
template <int R>
bool twoFeaturesPerWarp(int64_t N, int64_t K) {
  return R <= 2 && K <= 32 * 8 * kInFlight && N >= 4096;
}

template <typename T, int R>
void launchRows(cudaStream_t stream, const T* x, int64_t xStride, const T* w, int64_t N, int64_t K, const float* bias,
                Matrix y) {
  if (twoFeaturesPerWarp<R>(N, K)) {
    const unsigned blocks = static_cast<unsigned>((N + 2 * kWarps - 1) / (2 * kWarps));
    launch(gemvKernel<T, R, 2>, dim3(blocks), dim3(kThreads), 0, stream, x, xStride, w, N, K, bias, y);
  } else {
    const unsigned blocks = static_cast<unsigned>((N + kWarps - 1) / kWarps);
    launch(gemvKernel<T, R, 1>, dim3(blocks), dim3(kThreads), 0, stream, x, xStride, w, N, K, bias, y);
  }
}

template <typename T, int R, bool kNorm>
void launchFusedRows(cudaStream_t stream, ConstMatrix x, const T* w, int64_t N, int64_t K, const float* bias,
                     const GemvFusion& f, Matrix y) {
  const auto blocksFor = [](int64_t slots, int warps) { return dim3(static_cast<unsigned>((slots + warps - 1) / warps)); };
  const size_t shared = kNorm ? static_cast<size_t>(R * K) * sizeof(T) : 0;
  switch (f.epilogue) {
    case GemvFusion::Swiglu:
      return launch(gemvFusedKernel<T, R, 2, kNorm, Epi::Swiglu, kWarps>, blocksFor(N / 2, kWarps), dim3(kThreads), shared, stream, x, w, N, K, bias, f, y);
    case GemvFusion::Rope:
      // QKV is narrow (a warp per rope pair: 1,280 warps for TinyLlama): 4-warp blocks spread it over
      // twice as many blocks, so that every SM gets a share (8-warp blocks left 160 for 132 SMs).
      if (!kNorm || K <= 8 * 128 * kNormVectors) {
        return launch(gemvFusedKernel<T, R, 2, kNorm, Epi::Rope, 4>, blocksFor(N / 2, 4), dim3(128), shared, stream, x, w, N, K, bias, f, y);
      }
      return launch(gemvFusedKernel<T, R, 2, kNorm, Epi::Rope, kWarps>, blocksFor(N / 2, kWarps), dim3(kThreads), shared, stream, x, w, N, K, bias, f, y);
    default:
      if (twoFeaturesPerWarp<R>(N, K)) {
        return launch(gemvFusedKernel<T, R, 2, kNorm, Epi::Store, kWarps>, blocksFor((N + 1) / 2, kWarps), dim3(kThreads), shared, stream, x, w, N, K, bias, f, y);
      }
      return launch(gemvFusedKernel<T, R, 1, kNorm, Epi::Store, kWarps>, blocksFor(N, kWarps), dim3(kThreads), shared, stream, x, w, N, K, bias, f, y);
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

template <typename T, bool kNorm>
void launchGemvFused(cudaStream_t stream, ConstMatrix x, int64_t rows, const void* w, int64_t N, int64_t K,
                     const float* bias, const GemvFusion& f, Matrix y) {
  const T* wt = static_cast<const T*>(w);
  switch (rows) {
#define KILN_ROWS(R) \
  case R: return launchFusedRows<T, R, kNorm>(stream, x, wt, N, K, bias, f, y);
    KILN_ROWS(1) KILN_ROWS(2) KILN_ROWS(3) KILN_ROWS(4)
#undef KILN_ROWS
  }
}

}  // namespace

bool gemvApplies(DType t, const void* x, int64_t rows, int64_t xStride, const void* w, int64_t K) {
  const auto aligned16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return (t == DType::BF16 || t == DType::F16) && rows >= 1 && rows <= kMaxGemvRows && K % 8 == 0 &&
         xStride % 8 == 0 && aligned16(x) && aligned16(w);
}

bool gemvFusedApplies(DType t, ConstMatrix x, int64_t rows, const void* w, int64_t K, bool normPrologue) {
  const auto aligned16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  // Without a prologue x is the GEMV's operand, of the weights' type; with one, any activation type
  // (load8 reads 8 elements with 16-byte loads).
  const bool xType = normPrologue ? (x.dtype == DType::F32 || x.dtype == DType::BF16 || x.dtype == DType::F16) : x.dtype == t;
  // (An add_rms_norm prologue's addend passes the same checks: gemvFusedApplies is asked for both.)
  return t == DType::BF16 && xType && rows >= 1 && rows <= kMaxFusedGemvRows && K % 8 == 0 && x.stride % 8 == 0 &&
         aligned16(x.data) && aligned16(w) && (!normPrologue || K <= kMaxNormK);
}

void gemvFused(cudaStream_t stream, DType t, ConstMatrix x, int64_t rows, const void* w, int64_t N, int64_t K,
               const float* bias, const GemvFusion& f, Matrix y) {
  if (t != DType::BF16) throw std::runtime_error("cuda gemvFused: bfloat16 weights only");
  f.normWeight != nullptr ? launchGemvFused<__nv_bfloat16, true>(stream, x, rows, w, N, K, bias, f, y)
                          : launchGemvFused<__nv_bfloat16, false>(stream, x, rows, w, N, K, bias, f, y);
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
