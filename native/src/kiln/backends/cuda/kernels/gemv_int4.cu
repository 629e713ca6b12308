// Weight-only int4 linears (W4A16, TensorRT-LLM's per-group weight-only mode; decision 0014): an int4
// matrix [N, K] of group size G is N rows of K / 2 bytes, then N * K / G bfloat16 scales (dtype.h). A row
// is 32-element blocks of 16 bytes: byte j holds element j (low nibble) and j + 16 (high), as code + 8.
//   - decode rows (at most kMaxGemvRows): gemvInt4, the GEMV of gemv_int8.cu over whole blocks: a warp per
//     feature, each lane loading 16-byte blocks (32 codes, one scale: G % 32 == 0), kInFlight of them
//     ahead (the first round before the wait for the kernel before), x of the activation dtype applied to
//     each, the block's sum times its scale, a warp reduction. The codes widen exactly, so it computes
//     dequantize-then-multiply up to float32 summation order, as the CPU kernels do;
//   - more rows: dequantizeInt4 writes q * scale in the activation dtype into scratch (for 16-bit types
//     that rounds each weight by at most 2^-9 relative: a 4-bit code times an 8-bit mantissa needs 12
//     bits; far below int4's own error), then the cuBLASLt GEMM with the bias epilogue.
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
// Few blocks per lane and round, so that a thread needs few registers (as gemv.cu: more warps in flight
// beat more loads per warp on the H200, tools/gpu/gemv-bench.cu).
constexpr int kInFlight = 2;  // 16-byte blocks per lane loaded ahead of use (1 KB per warp)
constexpr int64_t kBlock = 32;  // elements per 16-byte block (dtype.h's kInt4Block)

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
__global__ void __launch_bounds__(kThreads) gemvInt4Kernel(const X* x, int64_t xStride, const uint8_t* w, int64_t N,
                                                           int64_t K, int64_t G, const float* bias, Matrix y) {
  const int lane = threadIdx.x & 31;
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const int64_t blocks = n < N ? K / kBlock : 0;  // the last block's spare warps load nothing
  const int64_t row = n < N ? n : 0;
  const uint4* codes = reinterpret_cast<const uint4*>(w + row * (K / 2));
  // The scales follow the N * K / 2 code bytes, a multiple of 16 (K % 32 == 0).
  const uint16_t* scales = reinterpret_cast<const uint16_t*>(w + N * (K / 2)) + row * (K / G);
  const int64_t blocksPerGroup = G / kBlock;
  // Each vector's group scale is loaded with its codes (they depend on nothing): read where it is used, it
  // was one more dependent round trip per round.
  uint4 wv[kInFlight];
  float sv[kInFlight];
#pragma unroll
  for (int u = 0; u < kInFlight; ++u) {
    const int64_t i = lane + 32 * u;
    if (i < blocks) {
      wv[u] = loadStreaming(codes + i);
      sv[u] = bf16BitsToFloat(__ldg(scales + i / blocksPerGroup));
    }
  }
  startAfterPriorKernels();
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0.0f;
  constexpr int64_t kRound = 32 * kInFlight;
  for (int64_t base = 0; base < blocks; base += kRound) {
    uint4 next[kInFlight];
    float nextScale[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t i = base + kRound + lane + 32 * u;
      if (i < blocks) {
        next[u] = loadStreaming(codes + i);
        nextScale[u] = bf16BitsToFloat(__ldg(scales + i / blocksPerGroup));
      }
    }
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t i = base + lane + 32 * u;
      if (i >= blocks) continue;
      const float scale = sv[u];
      float wf[kBlock];
      unpackInt4Block(wv[u], wf);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float xf[kBlock];
        load16(x + r * xStride, i * kBlock, xf);
        load16(x + r * xStride, i * kBlock + 16, xf + 16);
        float s = 0.0f;
#pragma unroll
        for (int j = 0; j < kBlock; ++j) s = fmaf(wf[j], xf[j], s);
        acc[r] = fmaf(s, scale, acc[r]);
      }
    }
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      wv[u] = next[u];
      sv[u] = nextScale[u];
    }
  }
  if (n >= N) return;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const float sum = warpSum(acc[r]);
    if (lane == 0) store(y.data, y.dtype, r * y.stride + n, sum + (bias ? bias[n] : 0.0f));
  }
}

// One thread per 16-byte block: its 32 weights q * scale, in the activation dtype, row-major [N, K], stored
// as 16-byte vectors (storeVectors: element stores made it ~10x slower than the GEMM that reads them).
template <typename X>
__global__ void dequantizeInt4Kernel(const uint8_t* w, int64_t N, int64_t K, int64_t G, X* out) {
  startAfterPriorKernels();
  const int64_t blocksPerRow = K / kBlock;
  const int64_t total = N * blocksPerRow;
  const uint16_t* scales = reinterpret_cast<const uint16_t*>(w + N * (K / 2));
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = i / blocksPerRow, b = i % blocksPerRow;
    const float scale = bf16BitsToFloat(scales[n * (K / G) + b * kBlock / G]);
    float wf[kBlock];
    unpackInt4Block(reinterpret_cast<const uint4*>(w)[i], wf);
#pragma unroll
    for (int j = 0; j < kBlock; ++j) wf[j] *= scale;
    storeVectors<X, kBlock>(out + n * K + b * kBlock, wf);
  }
}

template <typename F>
void dispatchActivation(DType t, F&& f) {
  switch (t) {
    case DType::F32: f(float{}); return;
    case DType::F16: f(__half{}); return;
    case DType::BF16: f(__nv_bfloat16{}); return;
    default: throw std::runtime_error("cuda int4 linear: the input must be float32, float16 or bfloat16");
  }
}

}  // namespace

bool gemvInt4Applies(DType xType, const void* x, int64_t rows, int64_t xStride, const void* w, int64_t K) {
  const auto aligned16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const int64_t perVector = xType == DType::F32 ? 4 : 8;
  return (xType == DType::F32 || xType == DType::F16 || xType == DType::BF16) && rows >= 1 && rows <= kMaxGemvRows &&
         K % kBlock == 0 && xStride % perVector == 0 && aligned16(x) && aligned16(w);
}

void gemvInt4(cudaStream_t stream, DType xType, const void* x, int64_t rows, int64_t xStride, const void* w, int64_t N,
              int64_t K, int64_t G, const float* bias, Matrix y) {
  const dim3 grid(static_cast<unsigned>((N + kWarps - 1) / kWarps));
  const uint8_t* packed = static_cast<const uint8_t*>(w);
  dispatchActivation(xType, [&](auto z) {
    using X = decltype(z);
    const X* xs = static_cast<const X*>(x);
    switch (rows) {
#define KILN_GEMV_INT4(R) \
  case R: launch(gemvInt4Kernel<X, R>, grid, dim3(kThreads), 0, stream, xs, xStride, packed, N, K, G, bias, y); return;
      KILN_GEMV_INT4(1) KILN_GEMV_INT4(2) KILN_GEMV_INT4(3) KILN_GEMV_INT4(4)
      KILN_GEMV_INT4(5) KILN_GEMV_INT4(6) KILN_GEMV_INT4(7) KILN_GEMV_INT4(8)
#undef KILN_GEMV_INT4
      default: throw std::runtime_error("cuda int4 GEMV: at most kMaxGemvRows rows");
    }
  });
}

void dequantizeInt4(cudaStream_t stream, const void* w, int64_t N, int64_t K, int64_t G, DType outType, void* out) {
  const int64_t blocks = N * (K / kBlock);
  dispatchActivation(outType, [&](auto z) {
    using X = decltype(z);
    launch(dequantizeInt4Kernel<X>, dim3(blocksFor(blocks, 256, 8192)), dim3(256), 0, stream, static_cast<const uint8_t*>(w),
           N, K, G, static_cast<X*>(out));
  });
}

}  // namespace cuda
}  // namespace kiln
