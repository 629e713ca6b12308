// AVX-512 F/BW/VL body of linearKernel (float32 FMAs). See avx512.h for why everything here has internal
// linkage. Compared with the AVX2 tile: 16-wide vectors, 32 registers (so 24 accumulators), and masked
// loads for the tail of K instead of a scalar loop.
#include <immintrin.h>

#include "kiln/backends/cpu/kernels/avx512.h"
#include "kiln/backends/cpu/kernels/decode_streams.h"

namespace kiln {
namespace avx512 {

namespace {

enum WeightKind { kF32, kF16, kBF16, kI8 };

// 16 consecutive weights from element idx (those outside `m` read as 0), widened to float32.
template <int Kind>
inline __m512 loadW16(const void* w, int64_t idx, __mmask16 m) {
  if (Kind == kF32) return _mm512_maskz_loadu_ps(m, static_cast<const float*>(w) + idx);
  if (Kind == kI8) {  // int8 codes, unscaled (the row's scale multiplies the finished sum)
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, static_cast<const int8_t*>(w) + idx)));
  }
  const __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(w) + idx);
  if (Kind == kF16) return _mm512_cvtph_ps(h);
  // bfloat16 is the top half of a float32: zero-extend to 32 bits and shift into place.
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// RT rows of x times NT weight rows, RT * NT accumulators in registers (at most 24 of the 32): each weight
// vector loaded (and widened) once serves RT rows, each x vector NT weight rows.
template <int Kind, int RT, int NT>
inline void microTile(const float* x, int64_t xStride, int64_t r, const void* w, int64_t n, int64_t K,
                      const float* scales, const float* bias, float* y, int64_t yStride) {
  __m512 acc[RT][NT];
  for (int i = 0; i < RT; ++i)
    for (int j = 0; j < NT; ++j) acc[i][j] = _mm512_setzero_ps();
  const float* xr[RT];
  for (int i = 0; i < RT; ++i) xr[i] = x + (r + i) * xStride;
  constexpr int64_t kWeightBytes = Kind == kF32 ? 4 : Kind == kI8 ? 1 : 2;
  constexpr int64_t kLineWeights = 64 / kWeightBytes;
  auto step = [&](int64_t k, __mmask16 m) {
    __m512 wv[NT];
    for (int j = 0; j < NT; ++j) wv[j] = loadW16<Kind>(w, (n + j) * K + k, m);
    for (int i = 0; i < RT; ++i) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, xr[i] + k);
      for (int j = 0; j < NT; ++j) acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  };
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    // Decode streams 16-bit weights from memory NT rows (NT pages) at a time, and the hardware prefetcher
    // stops at page boundaries: fetch the same position of the next tile's rows one tile ahead.
    if (RT == 1 && Kind != kF32 && (k % kLineWeights) == 0) {
      for (int j = 0; j < NT; ++j) {
        _mm_prefetch(static_cast<const char*>(w) + ((n + NT + j) * K + k) * kWeightBytes, _MM_HINT_T0);
      }
    }
    step(k, 0xffff);
  }
  if (k < K) step(k, static_cast<__mmask16>((1u << (K - k)) - 1));
  for (int i = 0; i < RT; ++i) {
    for (int j = 0; j < NT; ++j) {
      float s = _mm512_reduce_add_ps(acc[i][j]);
      if (Kind == kI8) s *= scales[n + j];
      y[(r + i) * yStride + n + j] = s + (bias ? bias[n + j] : 0.0f);
    }
  }
}

template <int Kind, int RT, int NT>
inline void featureSweep(const float* x, int64_t xStride, int64_t r, const void* w, int64_t n0, int64_t n1,
                         int64_t K, const float* scales, const float* bias, float* y, int64_t yStride) {
  int64_t n = n0;
  for (; n + NT <= n1; n += NT) microTile<Kind, RT, NT>(x, xStride, r, w, n, K, scales, bias, y, yStride);
  for (; n < n1; ++n) microTile<Kind, RT, 1>(x, xStride, r, w, n, K, scales, bias, y, yStride);
}

// One row of x (decode) times NT bfloat16 weight rows, on CPUs without AVX512_BF16: as the AVX2 path's
// pairTileBf16, 32 weights are loaded as 16 lanes of two; a shift gives the even-indexed ones as float32,
// a mask the odd-indexed ones, against x reordered once (in each chunk of 32, the 16 even-indexed elements
// then the 16 odd-indexed ones). Needs K % 32 == 0.
template <int NT>
inline void pairTileBf16(const float* xp, const void* w, int64_t n, int64_t K, const float* bias, float* y) {
  __m512 acc[NT];
  for (int j = 0; j < NT; ++j) acc[j] = _mm512_setzero_ps();
  const __m512i oddMask = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  const uint16_t* wr = static_cast<const uint16_t*>(w) + n * K;
  for (int64_t k = 0; k < K; k += 32) {
    const __m512 xe = _mm512_loadu_ps(xp + k);
    const __m512 xo = _mm512_loadu_ps(xp + k + 16);
    for (int j = 0; j < NT; ++j) _mm_prefetch(reinterpret_cast<const char*>(wr + (j + NT) * K + k), _MM_HINT_T0);
    for (int j = 0; j < NT; ++j) {
      const __m512i pair = _mm512_loadu_si512(wr + j * K + k);
      acc[j] = _mm512_fmadd_ps(xe, _mm512_castsi512_ps(_mm512_slli_epi32(pair, 16)), acc[j]);
      acc[j] = _mm512_fmadd_ps(xo, _mm512_castsi512_ps(_mm512_and_si512(pair, oddMask)), acc[j]);
    }
  }
  for (int j = 0; j < NT; ++j) y[n + j] = _mm512_reduce_add_ps(acc[j]) + (bias ? bias[n + j] : 0.0f);
}

constexpr int64_t kPairMaxK = 8192;  // its reordered copy of x lives on the stack

bool oneRowBf16(const float* x, const void* w, int64_t n0, int64_t n1, int64_t K, const float* bias, float* y) {
  if (K % 32 != 0 || K > kPairMaxK) return false;
  alignas(64) float xp[kPairMaxK];
  for (int64_t k = 0; k < K; k += 32) {
    for (int i = 0; i < 16; ++i) {
      xp[k + i] = x[k + 2 * i];
      xp[k + 16 + i] = x[k + 2 * i + 1];
    }
  }
  int64_t n = n0;
  for (; n + 8 <= n1; n += 8) pairTileBf16<8>(xp, w, n, K, bias, y);
  for (; n < n1; ++n) pairTileBf16<1>(xp, w, n, K, bias, y);
  return true;
}

// Row groups: 4 x 6, 3 x 8, 2 x 12 (24 accumulators; 6, 8 and 12 divide linear.cpp's 48-feature blocks),
// and one row x 8 (decode: 8 independent streams of weights keep the memory system busy).
template <int Kind>
void tile(const float* x, int64_t xStride, int64_t r0, int64_t r1, const void* w, int64_t n0, int64_t n1,
          int64_t K, const float* scales, const float* bias, float* y, int64_t yStride) {
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) featureSweep<Kind, 4, 6>(x, xStride, r, w, n0, n1, K, scales, bias, y, yStride);
  switch (r1 - r) {
    case 3: featureSweep<Kind, 3, 8>(x, xStride, r, w, n0, n1, K, scales, bias, y, yStride); break;
    case 2: featureSweep<Kind, 2, 12>(x, xStride, r, w, n0, n1, K, scales, bias, y, yStride); break;
    case 1:
      if (Kind == kBF16 && oneRowBf16(x + r * xStride, w, n0, n1, K, bias, y + r * yStride)) break;
      featureSweep<Kind, 1, 8>(x, xStride, r, w, n0, n1, K, scales, bias, y, yStride);
      break;
    default: break;
  }
}

// One row of x times NR int8 weight rows w[j] (far apart: the caller's streams), 32 weights a step with
// two accumulators per row (independent FMA chains), the codes widened to float32 exactly.
template <int NR>
inline void decodeRowsInt8(const float* x, const int8_t* const* w, int64_t K, float* out) {
  __m512 acc[NR][2];
  for (int j = 0; j < NR; ++j) acc[j][0] = acc[j][1] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    const __m512 x0 = _mm512_loadu_ps(x + k);
    const __m512 x1 = _mm512_loadu_ps(x + k + 16);
    for (int j = 0; j < NR; ++j) {
      const __m512 w0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[j] + k))));
      const __m512 w1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[j] + k + 16))));
      acc[j][0] = _mm512_fmadd_ps(x0, w0, acc[j][0]);
      acc[j][1] = _mm512_fmadd_ps(x1, w1, acc[j][1]);
    }
  }
  for (; k < K; k += 16) {
    const __mmask16 m = K - k >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (K - k)) - 1);
    const __m512 xv = _mm512_maskz_loadu_ps(m, x + k);
    for (int j = 0; j < NR; ++j) acc[j][0] = _mm512_fmadd_ps(xv, loadW16<kI8>(w[j], k, m), acc[j][0]);
  }
  for (int j = 0; j < NR; ++j) out[j] = _mm512_reduce_add_ps(_mm512_add_ps(acc[j][0], acc[j][1]));
}

}  // namespace

void decodeInt8(const float* x, const int8_t* w, int64_t n0, int64_t n1, int64_t K, const float* scales,
                const float* bias, float* y) {
  const auto store = [&](int64_t n, float dot) { y[n] = dot * scales[n] + (bias ? bias[n] : 0.0f); };
  forEachStreamedRow(
      n0, n1,
      [&](const int64_t (&at)[4]) {
        const int8_t* rows[4] = {w + at[0] * K, w + at[1] * K, w + at[2] * K, w + at[3] * K};
        float out[4];
        decodeRowsInt8<4>(x, rows, K, out);
        for (int j = 0; j < 4; ++j) store(at[j], out[j]);
      },
      [&](int64_t n) {
        const int8_t* row = w + n * K;
        float out;
        decodeRowsInt8<1>(x, &row, K, &out);
        store(n, out);
      });
}

void linearTile(const float* x, int64_t xStride, int64_t r0, int64_t r1, const void* w, DType wdt, int64_t n0,
                int64_t n1, int64_t K, const float* scales, const float* bias, float* y, int64_t yStride) {
  switch (wdt) {
    case DType::F32: tile<kF32>(x, xStride, r0, r1, w, n0, n1, K, nullptr, bias, y, yStride); return;
    case DType::F16: tile<kF16>(x, xStride, r0, r1, w, n0, n1, K, nullptr, bias, y, yStride); return;
    case DType::BF16: tile<kBF16>(x, xStride, r0, r1, w, n0, n1, K, nullptr, bias, y, yStride); return;
    case DType::I8: tile<kI8>(x, xStride, r0, r1, w, n0, n1, K, scales, bias, y, yStride); return;
    default: return;  // never routed here (see linearKernel)
  }
}

}  // namespace avx512
}  // namespace kiln
