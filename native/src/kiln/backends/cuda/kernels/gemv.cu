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

// acc[r] += w . x[r] over one 8-element vector i of the row.
template <typename T, int R>
__device__ __forceinline__ void accumulate(const uint4& wv, const T* __restrict__ x, int64_t xStride, int64_t i,
                                           float* acc) {
  float wf[8];
  vectorToFloats(wv, static_cast<const T*>(nullptr), wf);
#pragma unroll
  for (int r = 0; r < R; ++r) {
    float xf[8];
    vectorToFloats(*reinterpret_cast<const uint4*>(x + r * xStride + i * 8), static_cast<const T*>(nullptr), xf);
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
  int64_t first, vectors;
  const uint4* wRow[kRows];
  int64_t rowVectors[kRows];  // 0 for a feature past N: the last block's spare warps load nothing
  uint4 wv[kRows][kInFlight];
  float acc[kRows][R];

  // The first round of each row: issued before the kernel waits for its predecessor.
  __device__ __forceinline__ WarpRows(const T* w, int64_t N, int64_t K) {
    lane = threadIdx.x & 31;
    first = (static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5)) * kRows;
    vectors = K / 8;
#pragma unroll
    for (int j = 0; j < kRows; ++j) {
      const bool active = first + j < N;
      wRow[j] = reinterpret_cast<const uint4*>(w + (active ? first + j : 0) * K);
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

  // The rest of the rows, applied to x (global or shared memory).
  __device__ __forceinline__ void run(const T* x, int64_t xStride) {
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
          if (i < rowVectors[0]) accumulate<T, R>(wv[0][u], x, xStride, i, acc[0]);
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
            if (i < rowVectors[j]) accumulate<T, R>(wv[j][u], x, xStride, i, acc[j]);
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

  __device__ __forceinline__ void store(int64_t N, const float* bias, Matrix y) {
#pragma unroll
    for (int j = 0; j < kRows; ++j) {
#pragma unroll
      for (int r = 0; r < R; ++r) acc[j][r] = warpSum(acc[j][r]);
      const int64_t n = first + j;
      if (n < N && lane < R) {
        // Lane r stores row r (acc is indexed by compile-time r, so pick it out with a loop).
        float s = 0.0f;
#pragma unroll
        for (int r = 0; r < R; ++r)
          if (r == lane) s = acc[j][r];
        cuda::store(y.data, y.dtype, lane * y.stride + n, bias ? s + bias[n] : s);
      }
    }
  }
};

template <typename T, int R, int kRows>
__global__ void __launch_bounds__(kThreads) gemvKernel(const T* __restrict__ x, int64_t xStride, const T* __restrict__ w,
                                                       int64_t N, int64_t K, const float* __restrict__ bias, Matrix y) {
  WarpRows<T, R, kRows> rows(w, N, K);
  startAfterPriorKernels();
  rows.run(x, xStride);
  rows.store(N, bias, y);
}

// The GEMV with the add_rms_norm before it done by its own blocks: each block computes sum = a + b and
// y = RMSNorm(sum) for the R rows into shared memory (as addRmsNormKernel does, in the same order when
// the row has 2,048 features: one element in 256 per thread, the same block reduction), block 0 also
// stores sum and y for the ops after (the next residual add reads sum), and the GEMV reads x = y from
// shared memory. Two launches become one, and the norm's latency hides behind the first weight loads.
template <typename T, int R, int kRows>
__global__ void __launch_bounds__(kThreads) gemvAddRmsNormKernel(NormPrologue norm, const T* __restrict__ w, int64_t N,
                                                                 int64_t K, const float* __restrict__ bias, Matrix y) {
  extern __shared__ uint4 dynamicShared[];
  T* xs = reinterpret_cast<T*>(dynamicShared);  // [R][K]
  __shared__ float reduce[32];
  WarpRows<T, R, kRows> rows(w, N, K);
  startAfterPriorKernels();
  const bool writer = blockIdx.x == 0;
  for (int r = 0; r < R; ++r) {
    float sq = 0.0f;
    for (int64_t i = threadIdx.x; i < K; i += kThreads) {
      const float v = load(norm.a.data, norm.a.dtype, r * norm.a.stride + i) + load(norm.b.data, norm.b.dtype, r * norm.b.stride + i);
      if (writer) cuda::store(norm.sum.data, norm.sum.dtype, r * norm.sum.stride + i, v);
      const float rounded = roundTo(norm.sum.dtype, v);
      sq += rounded * rounded;
    }
    const float inv = 1.0f / sqrtf(blockSum(sq, reduce) / static_cast<float>(K) + norm.eps);
    for (int64_t i = threadIdx.x; i < K; i += kThreads) {
      const float v = roundTo(norm.sum.dtype, load(norm.a.data, norm.a.dtype, r * norm.a.stride + i) +
                                                  load(norm.b.data, norm.b.dtype, r * norm.b.stride + i));
      const float out = (v * inv) * (norm.weightOffset + load(norm.w, norm.wDType, i));
      xs[r * K + i] = fromF<T>(out);
      if (writer) cuda::store(norm.y.data, norm.y.dtype, r * norm.y.stride + i, out);
    }
  }
  __syncthreads();
  rows.run(xs, K);
  rows.store(N, bias, y);
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

template <typename T, int R>
void launchNormRows(cudaStream_t stream, const NormPrologue& norm, const T* w, int64_t N, int64_t K, const float* bias,
                    Matrix y) {
  const size_t shared = static_cast<size_t>(R * K) * sizeof(T);
  if (twoFeaturesPerWarp<R>(N, K)) {
    const unsigned blocks = static_cast<unsigned>((N + 2 * kWarps - 1) / (2 * kWarps));
    launch(gemvAddRmsNormKernel<T, R, 2>, dim3(blocks), dim3(kThreads), shared, stream, norm, w, N, K, bias, y);
  } else {
    const unsigned blocks = static_cast<unsigned>((N + kWarps - 1) / kWarps);
    launch(gemvAddRmsNormKernel<T, R, 1>, dim3(blocks), dim3(kThreads), shared, stream, norm, w, N, K, bias, y);
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

template <typename T>
void launchGemvNorm(cudaStream_t stream, const NormPrologue& norm, int64_t rows, const void* w, int64_t N, int64_t K,
                    const float* bias, Matrix y) {
  const T* wt = static_cast<const T*>(w);
  switch (rows) {
#define KILN_ROWS(R) \
  case R: return launchNormRows<T, R>(stream, norm, wt, N, K, bias, y);
    KILN_ROWS(1) KILN_ROWS(2) KILN_ROWS(3) KILN_ROWS(4) KILN_ROWS(5) KILN_ROWS(6) KILN_ROWS(7) KILN_ROWS(8)
#undef KILN_ROWS
  }
}

}  // namespace

bool gemvApplies(DType t, const void* x, int64_t rows, int64_t xStride, const void* w, int64_t K) {
  const auto aligned16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  return (t == DType::BF16 || t == DType::F16) && rows >= 1 && rows <= kMaxGemvRows && K % 8 == 0 &&
         xStride % 8 == 0 && aligned16(x) && aligned16(w);
}

bool gemvAddRmsNormApplies(DType t, int64_t rows, const void* w, int64_t K) {
  return (t == DType::BF16 || t == DType::F16) && rows >= 1 && rows <= kMaxGemvRows && K % 8 == 0 &&
         reinterpret_cast<uintptr_t>(w) % 16 == 0 && static_cast<size_t>(rows * K) * 2 <= kMaxNormPrologueBytes;
}

void gemvAddRmsNorm(cudaStream_t stream, DType t, const NormPrologue& norm, int64_t rows, const void* w, int64_t N,
                    int64_t K, const float* bias, Matrix y) {
  if (t == DType::BF16) {
    launchGemvNorm<__nv_bfloat16>(stream, norm, rows, w, N, K, bias, y);
  } else {
    launchGemvNorm<__half>(stream, norm, rows, w, N, K, bias, y);
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
