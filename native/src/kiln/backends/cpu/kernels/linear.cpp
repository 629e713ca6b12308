#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "kiln/backends/cpu/kernels/avx2.h"
#include "kiln/backends/cpu/kernels/avx512.h"
#include "kiln/backends/cpu/kernels/kernels.h"
#include "kiln/backends/cpu/kernels/portable.h"

namespace kiln {

namespace {

// Work is cut into tiles of kFeatBlock output features x kRowBlock rows. Within a tile a weight row is
// read (and, for 16-bit weights, converted) once and used for every row of x, so prefill reuses loaded
// weights; with one row (decode) every weight byte is streamed exactly once. 48 is a multiple of the
// AVX2 path's feature groups (3, 4, 6, 8).
constexpr int64_t kFeatBlock = 48;
constexpr int64_t kRowBlock = 64;
// Below about this many multiply-adds per parallel chunk, waking threads costs more than it saves.
constexpr int64_t kMinWorkPerChunk = 1 << 17;
// From about this many rows the AVX512_BF16 GEMM beats the dot-product tiles despite packing the weights
// (one thread, 2048 x 2048: 8 rows 81 vs 92 GFLOP/s, 16 rows 117 vs 94).
constexpr int64_t kGemmBf16MinRows = 12;

void linearTileGeneric(const float* x, int64_t xStride, int64_t r0, int64_t r1, const void* w, DType wdt,
                       int64_t n0, int64_t n1, int64_t K, const float* scales, const float* bias, float* y,
                       int64_t yStride) {
  thread_local std::vector<float> rowBuf;
  if (wdt != DType::F32 && static_cast<int64_t>(rowBuf.size()) < K) rowBuf.resize(static_cast<size_t>(K));
  for (int64_t n = n0; n < n1; ++n) {
    const float* wr;
    if (wdt == DType::F32) {
      wr = static_cast<const float*>(w) + n * K;
    } else {
      portable::toF32(static_cast<const char*>(w) + n * K * static_cast<int64_t>(dtypeSize(wdt)), wdt, K, rowBuf.data());
      wr = rowBuf.data();
    }
    const float b = bias ? bias[n] : 0.0f;
    const float scale = scales ? scales[n] : 1.0f;
    for (int64_t r = r0; r < r1; ++r) y[r * yStride + n] = portable::dot(x + r * xStride, wr, K) * scale + b;
  }
}

// bfloat16 bits of v rounded to nearest even (NaN stays a quiet NaN), as vcvtneps2bf16 rounds.
inline uint16_t roundToBf16Bits(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

}  // namespace

void linearKernel(const KernelEnv& env, const float* x, int64_t rows, int64_t xStride, const void* w, DType wdt,
                  int64_t N, int64_t K, const float* bias, float* y, int64_t yStride, bool bf16Activations) {
  if (rows <= 0 || N <= 0) return;
  if (wdt == DType::F8E4M3) {  // weights and activations in e4m3: linear_fp8.cpp
    linearFp8Kernel(env, x, rows, xStride, w, N, K, bias, y, yStride);
    return;
  }
  // int4 matrices have their own layout and kernel (linearInt4Kernel); the op routes them there.
  if (wdt == DType::I4) throw std::logic_error("linearKernel: int4 weights go to linearInt4Kernel");
  if (wdt == DType::Q8_0) {  // llama.cpp's Q8_0 blocks, inputs quantized to the same: linear_q8_0.cpp
    linearQ8_0Kernel(env, x, rows, xStride, static_cast<const uint8_t*>(w), N, K, bias, y, yStride);
    return;
  }
  // int8 weights with several rows of x: the input quantized to int8 where that is faster (VNNI), see
  // Int8Activations and linear_int8_act.cpp.
  if (wdt == DType::I8) {
    if (const Int8Activations mode = int8ActivationsFor(env, rows, K); mode != Int8Activations::Float) {
      linearInt8ActKernel(env, mode, x, rows, xStride, w, N, K, bias, y, yStride);
      return;
    }
  }
  const int64_t featBlocks = (N + kFeatBlock - 1) / kFeatBlock;
  const int64_t rowBlocks = (rows + kRowBlock - 1) / kRowBlock;
  const bool roundX = bf16Activations && wdt == DType::BF16;
  // int8 weights: the row scales follow the N * K codes (dtype.h). They are read as floats, so copy them
  // when the codes leave them misaligned.
  const float* scales = nullptr;
  thread_local std::vector<float> scaleCopy;
  if (wdt == DType::I8) {
    const char* after = static_cast<const char*>(w) + N * K;
    if (reinterpret_cast<uintptr_t>(after) % alignof(float) == 0) {
      scales = reinterpret_cast<const float*>(after);
    } else {
      scaleCopy.resize(static_cast<size_t>(N));
      std::memcpy(scaleCopy.data(), after, static_cast<size_t>(N) * sizeof(float));
      scales = scaleCopy.data();
    }
  }
  // vdpbf16ps takes x as packed bfloat16 (xb, row stride K); the other sets take the same rounded values
  // as float32 (xr), so every set multiplies the same numbers. Either copy is rows * K elements, made once
  // per call: about 1/N of the multiply-adds.
  const bool dotBf16 = roundX && wdt == DType::BF16 && env.isa >= Isa::Avx512Bf16;
  // Enough rows to amortise packing the weights: the outer-product GEMM (linear_gemm_avx512_bf16.cpp),
  // which reads x in bfloat16 pairs, so its rows are padded to an even length with a zero.
  const bool gemmBf16 = dotBf16 && rows >= kGemmBf16MinRows;
  const int64_t xbStride = gemmBf16 ? (K + 1) / 2 * 2 : K;
  thread_local std::vector<uint16_t> xb;
  thread_local std::vector<float> xr;
  if (roundX) {
    const size_t need = static_cast<size_t>(rows * xbStride);
    if (dotBf16 && xb.size() < need) xb.resize(need);
    if (!dotBf16 && xr.size() < need) xr.resize(need);
    uint16_t* xbp = xb.data();
    float* xrp = xr.data();
    portable::forEachRow(env, rows, K, [&](int64_t r) {
      if (xbStride > K) xbp[r * xbStride + K] = 0;
      if (dotBf16) {
        avx512bf16::roundRowBf16(x + r * xStride, K, xbp + r * xbStride);
        return;
      }
      for (int64_t k = 0; k < K; ++k) {
        const uint32_t bits = static_cast<uint32_t>(roundToBf16Bits(x[r * xStride + k])) << 16;
        std::memcpy(xrp + r * K + k, &bits, 4);
      }
    });
    if (!dotBf16) {
      x = xr.data();
      xStride = K;
    }
  }
  // The vector paths know the three weight types; int32 "weights" (never produced by the builder) go the
  // portable way.
  const Isa isa = wdt == DType::I32 ? Isa::Generic : env.isa;
  const uint16_t* xbData = xb.data();
  // Decode (one row) of int8 weights on AVX-512, and of bfloat16 weights with bfloat16 inputs on
  // AVX512_BF16: one contiguous range of features per thread, read as four sequential streams a quarter
  // apart (avx512::decodeInt8, avx512bf16::decodeBf16) rather than as 48-feature tasks of 8 adjacent rows.
  // KILN_CPU_DECODE=tiles keeps the tasks (comparisons; read once per process).
  static const bool decodeStreams = [] {
    const char* setting = std::getenv("KILN_CPU_DECODE");
    return !(setting && std::strcmp(setting, "tiles") == 0);
  }();
  const bool int8Decode = wdt == DType::I8 && env.isa >= Isa::Avx512;
  if (rows == 1 && decodeStreams && (int8Decode || dotBf16)) {
    portable::parallelItems(
        env, N, K,
        [&](int64_t n0, int64_t n1) {
          if (dotBf16) {
            avx512bf16::decodeBf16(xbData, static_cast<const uint16_t*>(w), n0, n1, K, bias, y);
          } else {
            avx512::decodeInt8(x, static_cast<const int8_t*>(w), n0, n1, K, scales, bias, y);
          }
        },
        kMinWorkPerChunk);
    return;
  }
  if (gemmBf16) {
    // Threads take contiguous runs of 64-feature panels; each packs its own panels.
    const int64_t panels = (N + avx512bf16::kGemmBf16Panel - 1) / avx512bf16::kGemmBf16Panel;
    auto gemm = [&](int64_t begin, int64_t end) {
      thread_local std::vector<uint32_t> pack;
      if (static_cast<int64_t>(pack.size()) < avx512bf16::gemmBf16PackWords()) {
        pack.resize(static_cast<size_t>(avx512bf16::gemmBf16PackWords()));
      }
      avx512bf16::linearGemmBf16(xbData, xbStride, rows, static_cast<const uint16_t*>(w),
                                 begin * avx512bf16::kGemmBf16Panel,
                                 std::min(N, end * avx512bf16::kGemmBf16Panel), K, bias, y, yStride, pack.data());
    };
    if (env.pool && env.pool->size() > 1) {
      env.pool->parallelFor(panels, 1, gemm);
    } else {
      gemm(0, panels);
    }
    return;
  }
  // Tasks are numbered feature-block-fastest, so a thread's contiguous range shares rows of x.
  auto body = [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t r0 = (task / featBlocks) * kRowBlock;
      const int64_t n0 = (task % featBlocks) * kFeatBlock;
      const int64_t r1 = std::min(rows, r0 + kRowBlock);
      const int64_t n1 = std::min(N, n0 + kFeatBlock);
      if (dotBf16) {
        avx512bf16::linearTileBf16(xbData, r0, r1, static_cast<const uint16_t*>(w), n0, n1, K, bias, y, yStride);
      } else if (isa >= Isa::Avx512) {
        avx512::linearTile(x, xStride, r0, r1, w, wdt, n0, n1, K, scales, bias, y, yStride);
      } else if (isa >= Isa::Avx2) {
        avx2::linearTile(x, xStride, r0, r1, w, wdt, n0, n1, K, scales, bias, y, yStride);
      } else {
        linearTileGeneric(x, xStride, r0, r1, w, wdt, n0, n1, K, scales, bias, y, yStride);
      }
    }
  };
  const int64_t tasks = featBlocks * rowBlocks;
  const int64_t workPerTask = std::max<int64_t>(1, kFeatBlock * std::min(rows, kRowBlock) * std::max<int64_t>(K, 1));
  if (env.pool && env.pool->size() > 1) {
    env.pool->parallelFor(tasks, std::max<int64_t>(1, kMinWorkPerChunk / workPerTask), body);
  } else {
    body(0, tasks);
  }
}

}  // namespace kiln
