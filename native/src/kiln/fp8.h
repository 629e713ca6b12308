#pragma once
// FP8 e4m3 (OCP "E4M3FN": 1 sign, 4 exponent bits of bias 7, 3 mantissa bits, no infinities, one NaN
// code per sign, largest finite 448) and the arithmetic of Kiln's FP8 linears (decision 0015), shared by
// the CPU reference kernel (backends/cpu/kernels/linear_fp8.cpp), the engine writer and, for its
// constants and scale formulas, the CUDA kernels (backends/cuda/kernels/fp8.cu), which must all agree:
//
//   weights (build time): one float32 scale per matrix, wScale = amax(|W|) / 448, codes e4m3(W / wScale)
//     with W / wScale computed as W * (448 / amax) in float32 (see fp8RowScales);
//   activations (every call): per row r, amax_r = max |x[r, :]| (exact in any order), clamped below by
//     kFp8MinAmax so the reciprocal stays finite; inv_r = 448 / amax_r, q[r, k] = e4m3(x[r, k] * inv_r)
//     rounded to nearest even and saturated to +-448; aScale_r = amax_r / 448;
//   y[r, n] = fma(acc[r, n], aScale_r * wScale, bias[n]) where acc[r, n] = sum_k q[r, k] * c[n, k] in float32
//     (each product of two e4m3 values is exact in float32; only the order of the sum differs by path).
//
// A row's result depends on that row only, whatever else is batched with it.
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define KILN_FP8_HD __host__ __device__
#else
#define KILN_FP8_HD
#endif

namespace kiln {

constexpr float kFp8Max = 448.0f;
// Below this a row's (or a matrix's) largest magnitude counts as this: 448 / 1e-30 is finite in float32,
// and such a row quantizes to zeros anyway.
constexpr float kFp8MinAmax = 1e-30f;

// The quantization scale (amax / 448) and its multiplier (448 / amax) for a largest magnitude amax.
KILN_FP8_HD inline float fp8ScaleOf(float amax) { return (amax > kFp8MinAmax ? amax : kFp8MinAmax) / kFp8Max; }
KILN_FP8_HD inline float fp8InverseScaleOf(float amax) { return kFp8Max / (amax > kFp8MinAmax ? amax : kFp8MinAmax); }

// float32 -> e4m3 bits, round to nearest even, saturating (|v| >= 448 and infinities give +-448; NaN gives
// 0x7f with v's sign), as the hardware's cvt.rn.satfinite.e4m3x2.f32 does.
inline uint8_t f32ToE4m3(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7f;
  float a;
  std::memcpy(&a, &abs, 4);
  if (a >= kFp8Max) return sign | 0x7e;
  if (a < 0.015625f) {
    // Subnormals (and zero): m * 2^-9 for m in [0, 8); a * 512 is exact, rounded to nearest even. m = 8 is
    // code 0x08, the smallest normal 2^-6, so the carry needs no special case.
    const float m = std::nearbyint(a * 512.0f);
    return sign | static_cast<uint8_t>(m);
  }
  int e = static_cast<int>((abs >> 23) & 0xffu) - 127;  // in [-6, 8]
  uint32_t keep = (abs >> 20) & 7u;
  const uint32_t rest = abs & 0xfffffu;
  if (rest > 0x80000u || (rest == 0x80000u && (keep & 1u))) ++keep;
  if (keep == 8) {
    keep = 0;
    ++e;
  }
  // a < 448 never rounds past 1.75 * 2^8 (0x7e): the NaN code 0x7f is out of reach.
  return sign | static_cast<uint8_t>(((e + 7) << 3) | static_cast<int>(keep));
}

// e4m3 bits -> float32 (exact).
inline float e4m3ToF32(uint8_t c) {
  const int exponent = (c >> 3) & 0xf, mantissa = c & 7;
  float v;
  if ((c & 0x7f) == 0x7f) {
    v = NAN;
  } else if (exponent == 0) {
    v = std::ldexp(static_cast<float>(mantissa), -9);
  } else {
    v = std::ldexp(1.0f + static_cast<float>(mantissa) / 8.0f, exponent - 7);
  }
  return (c & 0x80) ? -v : v;
}

}  // namespace kiln
