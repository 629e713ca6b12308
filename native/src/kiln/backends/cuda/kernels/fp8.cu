// FP8 e4m3 linears (decision 0015; kiln/fp8.h defines the arithmetic, backends/cpu/kernels/linear_fp8.cpp is
// its reference): an FP8 matrix [N, K] is its e4m3 codes row-major, then one float32 scale (dtype.h), and
// every call quantizes each input row to e4m3 with its own scale amax_r / 448.
//   - decode rows (at most kMaxGemvRows): gemvFp8. Every block finds its rows' amax and writes their e4m3
//     codes into shared memory (one pass over x, which is in L2; widened to float32, times 2^100, where
//     they fit: weight_formats.cuh), then streams weights as kernels/gemv.cu does: a warp per feature, kInFlight 16-code vectors per lane loaded ahead (the first round before
//     the wait for the kernel before), a warp reduction, then fma(sum, aScale_r * wScale, bias);
//   - a bfloat16 engine's fused linears at batch 1 (a norm prologue; a SwiGLU, rope or residual epilogue)
//     run as kernels/gemv.cu's fused GEMV instead (Fp8Weights in weight_formats.cuh): x quantized once per
//     block by the same formulas, the same sums;
//   - more rows: quantizeRowsFp8 (a block per row) writes the codes and aScale into scratch, cuBLASLt's FP8
//     GEMM multiplies them into float32 scratch, and fp8Epilogue applies aScale_r * wScale and the bias.
// Both paths convert with the same hardware instruction (cvt.rn.satfinite.e4m3x2.f32), so their codes are
// identical and their results differ by the float32 summation order only.
#include <cuda_fp8.h>

#include <cstdlib>
#include <string>

#include "kiln/backends/cuda/kernels/common.cuh"
#include "kiln/backends/cuda/kernels/kernels.h"
#include "kiln/backends/cuda/kernels/weight_formats.cuh"
#include "kiln/fp8.h"

namespace kiln {
namespace cuda {

namespace {

constexpr int kWarps = 8;  // features per block
constexpr int kThreads = 32 * kWarps;
constexpr int kInFlight = 4;  // 16-code vectors per lane loaded ahead of use (2 KB per warp)

// 16 e4m3 codes as float32 (exact).
__device__ __forceinline__ void e4m3x16ToFloats(const uint4& v, float* f) {
  e4m3x4ToFloats(v.x, f);
  e4m3x4ToFloats(v.y, f + 4);
  e4m3x4ToFloats(v.z, f + 8);
  e4m3x4ToFloats(v.w, f + 12);
}

// kScaled: x's quantized rows kept in shared memory as float32 times 2^100 and the weights widened with
// integer instructions times 2^-120 (weight_formats.cuh: the same sums bit for bit, fewer instructions per
// weight); otherwise (rows * K * 4 above the shared memory the kernel may take) as e4m3 codes, both widened
// by conversion instructions at every use.
// kSplit > 1: split-K, kSplit consecutive warps share a feature's row (blocks of kWarps * kSplit warps) and
// their sums meet in shared memory, as gemv.cu's GEMVs do: twice the warps keep twice the bytes in flight
// (batch 1's o / down projections, where one warp a feature left the kernel latency-bound).
template <typename X, int R, bool kScaled, int kSplit = 1>
__global__ void __launch_bounds__(kThreads * kSplit) gemvFp8Kernel(const X* x, int64_t xStride, const uint8_t* w, int64_t N,
                                                                   int64_t K, const float* bias, Matrix y) {
  extern __shared__ uint4 sharedX[];  // R rows of K: float32 (kScaled) or e4m3 codes
  __shared__ float red[32];
  __shared__ float rowScale[R];
  uint8_t* xq = reinterpret_cast<uint8_t*>(sharedX);
  float* xs = reinterpret_cast<float*>(sharedX);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, part = warp % kSplit;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kWarps + warp / kSplit;
  // This warp's vectors of the row: [begin, vectors); none for the last block's spare warps.
  const int64_t all = K / 16, per = (all + kSplit - 1) / kSplit;
  const int64_t begin = n < N ? min(all, part * per) : 0;
  const int64_t vectors = n < N ? min(all, begin + per) : 0;
  const uint4* row = reinterpret_cast<const uint4*>(w + (n < N ? n : 0) * K);
  uint4 wv[kInFlight];
#pragma unroll
  for (int u = 0; u < kInFlight; ++u) {
    const int64_t i = begin + lane + 32 * u;
    if (i < vectors) wv[u] = loadStreaming(row + i);
  }
  startAfterPriorKernels();
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const float s = kScaled ? quantizeRowFp8Scaled(x + r * xStride, K, xs + r * K, red) : quantizeRowFp8(x + r * xStride, K, xq + r * K, red);
    if (threadIdx.x == 0) rowScale[r] = s;
  }
  __syncthreads();
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0.0f;
  constexpr int64_t kRound = 32 * kInFlight;
  for (int64_t base = begin; base < vectors; base += kRound) {
    uint4 next[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t i = base + kRound + lane + 32 * u;
      if (i < vectors) next[u] = loadStreaming(row + i);
    }
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t i = base + lane + 32 * u;
      if (i >= vectors) continue;
      float wf[16];
      if constexpr (kScaled) {
        e4m3x4ToScaledFloats(wv[u].x, wf);
        e4m3x4ToScaledFloats(wv[u].y, wf + 4);
        e4m3x4ToScaledFloats(wv[u].z, wf + 8);
        e4m3x4ToScaledFloats(wv[u].w, wf + 12);
      } else {
        e4m3x16ToFloats(wv[u], wf);
      }
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float xf[16];
        if constexpr (kScaled) {
#pragma unroll
          for (int q = 0; q < 4; ++q) {
            const float4 v = *reinterpret_cast<const float4*>(xs + r * K + i * 16 + 4 * q);
            xf[4 * q] = v.x, xf[4 * q + 1] = v.y, xf[4 * q + 2] = v.z, xf[4 * q + 3] = v.w;
          }
        } else {
          e4m3x16ToFloats(*reinterpret_cast<const uint4*>(xq + r * K + i * 16), xf);
        }
        float s = acc[r];
#pragma unroll
        for (int j = 0; j < 16; ++j) s = fmaf(wf[j], xf[j], s);
        acc[r] = s;
      }
    }
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) wv[u] = next[u];
  }
  float sums[R];
#pragma unroll
  for (int r = 0; r < R; ++r) sums[r] = warpSum(acc[r]);
  if constexpr (kSplit > 1) {
    __shared__ float partial[kWarps * kSplit][R];
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < R; ++r) partial[warp][r] = sums[r];
    }
    __syncthreads();
    if (part != 0) return;
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int p = 1; p < kSplit; ++p) sums[r] += partial[warp + p][r];
  }
  if (n >= N) return;
  const float wScale = fp8MatrixScale(w, N, K);
  const float b = bias ? bias[n] : 0.0f;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const float sum = sums[r];
    // The 2^20 of the scaled sums is exact: fma(sum * 2^-20, scale * 2^20, b) rounds what fma(sum, scale, b) does.
    const float scale = kScaled ? (rowScale[r] * wScale) * kFp8SumScale : rowScale[r] * wScale;
    if (lane == 0) store(y.data, y.dtype, r * y.stride + n, fmaf(sum, scale, b));
  }
}

template <typename X>
__global__ void quantizeRowsKernel(const X* x, int64_t xStride, int64_t K, uint8_t* codes, int64_t ldCodes,
                                   float* aScale) {
  __shared__ float red[32];
  startAfterPriorKernels();
  const int64_t r = blockIdx.x;
  const float s = quantizeRowFp8(x + r * xStride, K, codes + r * ldCodes, red);
  if (threadIdx.x == 0) aScale[r] = s;
}

__global__ void epilogueKernel(const float* acc, int64_t ldAcc, int64_t rows, int64_t N, const float* aScale,
                               const uint8_t* w, int64_t K, const float* bias, Matrix y) {
  startAfterPriorKernels();
  const float wScale = fp8MatrixScale(w, N, K);
  const int64_t total = rows * N;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / N, n = i % N;
    store(y.data, y.dtype, r * y.stride + n, fmaf(acc[r * ldAcc + n], aScale[r] * wScale, bias ? bias[n] : 0.0f));
  }
}

template <typename F>
void dispatchActivation(DType t, F&& f) {
  switch (t) {
    case DType::F32: f(float{}); return;
    case DType::F16: f(__half{}); return;
    case DType::BF16: f(__nv_bfloat16{}); return;
    default: throw std::runtime_error("cuda fp8 linear: the input must be float32, float16 or bfloat16");
  }
}

template <typename X, int R>
void allowGemvShared() {
  const auto allow = [](auto kernel) {
    const cudaError_t status = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxGemvFp8SharedBytes);
    if (status != cudaSuccess) throw std::runtime_error(std::string("cuda fp8 GEMV: shared memory: ") + cudaGetErrorString(status));
  };
  allow(gemvFp8Kernel<X, R, true>);
  allow(gemvFp8Kernel<X, R, false>);
  if constexpr (R == 1) {
    allow(gemvFp8Kernel<X, 1, false, 2>);
    allow(gemvFp8Kernel<X, 1, false, 4>);
  }
}

// Split-K of the batch-1 FP8 GEMV (codes path): KILN_CUDA_FP8_GEMV_SPLIT = 2 (default) or 4 warps a
// feature, 1 for one (read once per process). On an H200 (session 14) the issue-10 model's FP8 batch-1
// decode took 0.988 ms/token with 2, 1.092 with 1 and 1.116 with 4 (docs/benchmarks.md).
int fp8GemvSplit() {
  static const int split = [] {
    const char* setting = std::getenv("KILN_CUDA_FP8_GEMV_SPLIT");
    const int v = setting && *setting ? std::atoi(setting) : 2;
    return v == 2 || v == 4 ? v : 1;
  }();
  return split;
}

}  // namespace

bool gemvFp8Applies(DType xType, const void* x, int64_t rows, int64_t xStride, const void* w, int64_t K) {
  const auto aligned16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  (void)x;
  (void)xStride;
  return (xType == DType::F32 || xType == DType::F16 || xType == DType::BF16) && rows >= 1 && rows <= kMaxGemvRows &&
         K % 16 == 0 && rows * K <= kMaxGemvFp8SharedBytes && aligned16(w);
}

void prepareFp8Kernels() {
#define KILN_FP8_ALLOW(R) allowGemvShared<float, R>(), allowGemvShared<__half, R>(), allowGemvShared<__nv_bfloat16, R>();
  KILN_FP8_ALLOW(1) KILN_FP8_ALLOW(2) KILN_FP8_ALLOW(3) KILN_FP8_ALLOW(4)
  KILN_FP8_ALLOW(5) KILN_FP8_ALLOW(6) KILN_FP8_ALLOW(7) KILN_FP8_ALLOW(8)
#undef KILN_FP8_ALLOW
}

void gemvFp8(cudaStream_t stream, DType xType, const void* x, int64_t rows, int64_t xStride, const void* w, int64_t N,
             int64_t K, const float* bias, Matrix y) {
  const dim3 grid(static_cast<unsigned>((N + kWarps - 1) / kWarps));
  // x's rows as float32 where they fit (kScaled), else as codes. kScaled only with KILN_CUDA_FP8_GEMV_SCALED=1
  // (read once): correct (test/cuda/fp8.test.mjs passes with it on an H100, session 14) but slower there,
  // 1.32 against 1.10 ms/token at batch 1 (four float32 multiply-adds a weight byte, and x four times
  // the shared-memory bytes), so the codes path stays the default.
  static const bool scaledAllowed = [] {
    const char* setting = std::getenv("KILN_CUDA_FP8_GEMV_SCALED");
    return setting && std::string(setting) == "1";
  }();
  const bool scaled = scaledAllowed && rows * K * 4 <= kMaxGemvFp8SharedBytes;
  const size_t shared = static_cast<size_t>(rows * K) * (scaled ? 4 : 1);
  const uint8_t* codes = static_cast<const uint8_t*>(w);
  dispatchActivation(xType, [&](auto z) {
    using X = decltype(z);
    const X* xs = static_cast<const X*>(x);
    if (rows == 1 && !scaled && fp8GemvSplit() > 1) {
      const int split = fp8GemvSplit();
      if (split == 4) return launch(gemvFp8Kernel<X, 1, false, 4>, grid, dim3(kThreads * 4), shared, stream, xs, xStride, codes, N, K, bias, y);
      return launch(gemvFp8Kernel<X, 1, false, 2>, grid, dim3(kThreads * 2), shared, stream, xs, xStride, codes, N, K, bias, y);
    }
    switch (rows) {
#define KILN_GEMV_FP8(R)                                                                                                      \
  case R:                                                                                                                    \
    if (scaled) return launch(gemvFp8Kernel<X, R, true>, grid, dim3(kThreads), shared, stream, xs, xStride, codes, N, K, bias, y); \
    return launch(gemvFp8Kernel<X, R, false>, grid, dim3(kThreads), shared, stream, xs, xStride, codes, N, K, bias, y);
      KILN_GEMV_FP8(1) KILN_GEMV_FP8(2) KILN_GEMV_FP8(3) KILN_GEMV_FP8(4)
      KILN_GEMV_FP8(5) KILN_GEMV_FP8(6) KILN_GEMV_FP8(7) KILN_GEMV_FP8(8)
#undef KILN_GEMV_FP8
      default: throw std::runtime_error("cuda fp8 GEMV: at most kMaxGemvRows rows");
    }
  });
}

void quantizeRowsFp8(cudaStream_t stream, DType xType, const void* x, int64_t rows, int64_t xStride, int64_t K,
                     void* codes, int64_t ldCodes, float* aScale) {
  if (rows <= 0) return;
  dispatchActivation(xType, [&](auto z) {
    using X = decltype(z);
    launch(quantizeRowsKernel<X>, dim3(static_cast<unsigned>(rows)), dim3(256), 0, stream, static_cast<const X*>(x), xStride,
           K, static_cast<uint8_t*>(codes), ldCodes, aScale);
  });
}

void fp8Epilogue(cudaStream_t stream, const float* acc, int64_t ldAcc, int64_t rows, int64_t N, const float* aScale,
                 const void* w, int64_t K, const float* bias, Matrix y) {
  if (rows <= 0) return;
  launch(epilogueKernel, dim3(blocksFor(rows * N, 256, 8192)), dim3(256), 0, stream, acc, ldAcc, rows, N, aScale,
         static_cast<const uint8_t*>(w), K, bias, y);
}

}  // namespace cuda
}  // namespace kiln
