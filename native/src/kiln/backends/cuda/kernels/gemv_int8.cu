// Weight-only int8 linears (W8A16, TensorRT-LLM's per-channel weight-only mode): an int8 matrix [N, K]
// is its codes row-major, then N float32 scales (dtype.h), and y[r, n] = scale[n] * (x[r, :] . q[n, :])
// (+ bias[n]): the codes are widened exactly, the scale applied to each finished sum, as on the CPU.
//   - decode rows (at most kMaxGemvRows): gemvInt8, the GEMV of gemv.cu over 16-code vectors: a warp per
//     feature, kInFlight vectors per lane loaded ahead (the first round before the wait for the kernel
//     before), x of the activation dtype applied to each, a warp reduction, then the scale;
//   - more rows: widenInt8 writes the codes as the activation dtype into scratch (exact: |q| <= 127), a
//     cuBLASLt GEMM multiplies, and scaleColumns applies the scales and the bias.
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
// Few vectors per lane and round, so that a thread needs few registers (as gemv.cu: more warps in flight
// beat more loads per warp on the H200, tools/gpu/gemv-bench.cu).
constexpr int kInFlight = 2;  // 16-code vectors per lane loaded ahead of use (1 KB per warp)

// 16 elements of x from element `at` of a row, as float32.
template <typename X>
__device__ __forceinline__ void load16(const X* row, int64_t at, float* f) {
  constexpr int kPerVector = 16 / static_cast<int>(sizeof(X));
#pragma unroll
  for (int v = 0; v < 16 / kPerVector; ++v) {
    vectorToFloats(*reinterpret_cast<const uint4*>(row + at + v * kPerVector), static_cast<const X*>(nullptr), f + v * kPerVector);
  }
}

template <typename X, int R>
__global__ void __launch_bounds__(kThreads) gemvInt8Kernel(const X* x, int64_t xStride, const int8_t* w, int64_t N,
                                                           int64_t K, const float* bias, Matrix y) {
  const int lane = threadIdx.x & 31;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const int64_t vectors = n < N ? K / 16 : 0;  // the last block's spare warps load nothing
  const uint4* row = reinterpret_cast<const uint4*>(w + (n < N ? n : 0) * K);
  uint4 wv[kInFlight];
#pragma unroll
  for (int u = 0; u < kInFlight; ++u) {
    const int64_t i = lane + 32 * u;
    if (i < vectors) wv[u] = loadStreaming(row + i);
  }
  startAfterPriorKernels();
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0.0f;
  constexpr int64_t kRound = 32 * kInFlight;
  for (int64_t base = 0; base < vectors; base += kRound) {
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
      int8x4ToFloats(wv[u].x, wf);
      int8x4ToFloats(wv[u].y, wf + 4);
      int8x4ToFloats(wv[u].z, wf + 8);
      int8x4ToFloats(wv[u].w, wf + 12);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float xf[16];
        load16(x + r * xStride, i * 16, xf);
        float s = acc[r];
#pragma unroll
        for (int j = 0; j < 16; ++j) s = fmaf(wf[j], xf[j], s);
        acc[r] = s;
      }
    }
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) wv[u] = next[u];
  }
  if (n >= N) return;
  const float scale = int8RowScale(reinterpret_cast<const uint8_t*>(w) + N * K, n);
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const float sum = warpSum(acc[r]);
    if (lane == 0) store(y.data, y.dtype, r * y.stride + n, sum * scale + (bias ? bias[n] : 0.0f));
  }
}

// Sixteen codes per thread: a 16-byte load, 16-byte stores (storeVectors); the tail (count % 16) element
// by element.
template <typename X>
__global__ void widenInt8Kernel(const int8_t* w, int64_t count, X* out) {
  startAfterPriorKernels();
  const int64_t vectors = count / 16;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t i = first; i < vectors; i += stride) {
    const uint4 v = *reinterpret_cast<const uint4*>(w + i * 16);
    const int8_t* codes = reinterpret_cast<const int8_t*>(&v);
    float f[16];
#pragma unroll
    for (int j = 0; j < 16; ++j) f[j] = static_cast<float>(codes[j]);
    storeVectors<X, 16>(out + i * 16, f);
  }
  for (int64_t i = vectors * 16 + first; i < count; i += stride) out[i] = fromF<X>(static_cast<float>(w[i]));
}

__global__ void scaleColumnsKernel(Matrix y, int64_t rows, int64_t N, const uint8_t* scales, const float* bias) {
  startAfterPriorKernels();
  const int64_t total = rows * N;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / N, n = i % N;
    const int64_t at = r * y.stride + n;
    store(y.data, y.dtype, at, load(y.data, y.dtype, at) * int8RowScale(scales, n) + (bias ? bias[n] : 0.0f));
  }
}

template <typename F>
void dispatchActivation(DType t, F&& f) {
  switch (t) {
    case DType::F32: f(float{}); return;
    case DType::F16: f(__half{}); return;
    case DType::BF16: f(__nv_bfloat16{}); return;
    default: throw std::runtime_error("cuda int8 linear: the input must be float32, float16 or bfloat16");
  }
}

}  // namespace

bool gemvInt8Applies(DType xType, const void* x, int64_t rows, int64_t xStride, const void* w, int64_t K) {
  const auto aligned16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const int64_t perVector = xType == DType::F32 ? 4 : 8;
  return (xType == DType::F32 || xType == DType::F16 || xType == DType::BF16) && rows >= 1 && rows <= kMaxGemvRows &&
         K % 16 == 0 && xStride % perVector == 0 && aligned16(x) && aligned16(w);
}

void gemvInt8(cudaStream_t stream, DType xType, const void* x, int64_t rows, int64_t xStride, const void* w, int64_t N,
              int64_t K, const float* bias, Matrix y) {
  const dim3 grid(static_cast<unsigned>((N + kWarps - 1) / kWarps));
  const int8_t* codes = static_cast<const int8_t*>(w);
  dispatchActivation(xType, [&](auto z) {
    using X = decltype(z);
    const X* xs = static_cast<const X*>(x);
    switch (rows) {
#define KILN_GEMV_INT8(R) \
  case R: launch(gemvInt8Kernel<X, R>, grid, dim3(kThreads), 0, stream, xs, xStride, codes, N, K, bias, y); return;
      KILN_GEMV_INT8(1) KILN_GEMV_INT8(2) KILN_GEMV_INT8(3) KILN_GEMV_INT8(4)
      KILN_GEMV_INT8(5) KILN_GEMV_INT8(6) KILN_GEMV_INT8(7) KILN_GEMV_INT8(8)
#undef KILN_GEMV_INT8
      default: throw std::runtime_error("cuda int8 GEMV: at most kMaxGemvRows rows");
    }
  });
}

void widenInt8(cudaStream_t stream, const void* w, int64_t N, int64_t K, DType outType, void* out) {
  const int64_t count = N * K;
  dispatchActivation(outType, [&](auto z) {
    using X = decltype(z);
    launch(widenInt8Kernel<X>, dim3(blocksFor((count + 15) / 16, 256, 8192)), dim3(256), 0, stream, static_cast<const int8_t*>(w), count,
           static_cast<X*>(out));
  });
}

void scaleColumns(cudaStream_t stream, Matrix y, int64_t rows, int64_t N, const void* w, int64_t K, const float* bias) {
  if (rows <= 0) return;
  const uint8_t* scales = static_cast<const uint8_t*>(w) + N * K;
  launch(scaleColumnsKernel, dim3(blocksFor(rows * N, 256, 8192)), dim3(256), 0, stream, y, rows, N, scales, bias);
}

}  // namespace cuda
}  // namespace kiln
