// AVX2/FMA body of linearInt4Kernel (linear_int4.cpp). See avx2.h for why everything here has internal
// linkage (and why the bfloat16 scale is widened here rather than with dtype.h's inline helper).
//
// A 32-element block is 16 bytes: the low nibbles are elements 0-15, the high nibbles elements 16-31
// (dtype.h), so one load, an and and a shift give two runs of 16 codes that line up with contiguous x.
// Codes minus 8 are widened to float32 and accumulated with FMAs, 8 lanes at a time, as the 16-bit tiles
// of linear_avx2.cpp do; the group's scale multiplies either each code vector (exact) or, for one row,
// the group's sum.
#include <immintrin.h>

#include <cstring>

#include "kiln/backends/cpu/kernels/avx2.h"
#include "kiln/backends/cpu/kernels/avx2_math.h"

namespace kiln {
namespace avx2 {

namespace {

inline __m256 scaleOf(const uint16_t* scales, int64_t i) {
  const uint32_t bits = static_cast<uint32_t>(scales[i]) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return _mm256_set1_ps(f);
}

// RT rows of x times NT weight rows (RT * NT accumulators, as linear_avx2.cpp's microTile).
template <int RT, int NT>
inline void microTile(const float* x, int64_t xStride, int64_t r, const uint8_t* codes, const uint16_t* scales,
                      int64_t n, int64_t K, int64_t G, const float* bias, float* y, int64_t yStride) {
  // One row (decode) sums each group's unscaled codes times x and scales the sum (one FMA a group, not a
  // multiply per 8 codes: 12% faster); more rows have no registers to spare for the group sums, so
  // they scale the codes (exact) before the FMAs.
  constexpr bool kGroupSums = RT == 1;
  __m256 acc[RT][NT], gacc[RT][NT];
  for (int i = 0; i < RT; ++i) {
    for (int j = 0; j < NT; ++j) acc[i][j] = gacc[i][j] = _mm256_setzero_ps();
  }
  const float* xr[RT];
  for (int i = 0; i < RT; ++i) xr[i] = x + (r + i) * xStride;
  const int64_t rowBytes = K / 2;
  const int64_t groups = K / G;
  const __m128i low4 = _mm_set1_epi8(0x0f);
  const __m128i eight = _mm_set1_epi8(8);
  for (int64_t g = 0; g < groups; ++g) {
    __m256 s[NT];
    for (int j = 0; j < NT; ++j) s[j] = scaleOf(scales, (n + j) * groups + g);
    for (int64_t k = g * G; k < (g + 1) * G; k += 32) {
      // Decode streams the codes from memory NT rows (NT pages) at a time: fetch the same position of the
      // next tile's rows one tile ahead, a cache line (128 codes) at a time, as linear_avx2.cpp does.
      if (RT == 1 && (k & 127) == 0) {
        for (int j = 0; j < NT; ++j) _mm_prefetch(reinterpret_cast<const char*>(codes + (n + NT + j) * rowBytes + k / 2), _MM_HINT_T0);
      }
      __m128i lo[NT], hi[NT];
      for (int j = 0; j < NT; ++j) {
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + (n + j) * rowBytes + k / 2));
        lo[j] = _mm_sub_epi8(_mm_and_si128(b, low4), eight);
        hi[j] = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(b, 4), low4), eight);
      }
      for (int v = 0; v < 4; ++v) {
        __m256 wv[NT];
        for (int j = 0; j < NT; ++j) {
          const __m128i q = v == 0 ? lo[j] : v == 1 ? _mm_unpackhi_epi64(lo[j], lo[j]) : v == 2 ? hi[j] : _mm_unpackhi_epi64(hi[j], hi[j]);
          const __m256 codes = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
          wv[j] = kGroupSums ? codes : _mm256_mul_ps(codes, s[j]);
        }
        for (int i = 0; i < RT; ++i) {
          const __m256 xv = _mm256_loadu_ps(xr[i] + k + 8 * v);
          for (int j = 0; j < NT; ++j) {
            if (kGroupSums) gacc[i][j] = _mm256_fmadd_ps(xv, wv[j], gacc[i][j]);
            else acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
          }
        }
      }
    }
    if (kGroupSums) {  // the group's codes are done: its scale multiplies their sum once
      for (int i = 0; i < RT; ++i) {
        for (int j = 0; j < NT; ++j) {
          acc[i][j] = _mm256_fmadd_ps(gacc[i][j], s[j], acc[i][j]);
          gacc[i][j] = _mm256_setzero_ps();
        }
      }
    }
  }
  for (int i = 0; i < RT; ++i) {
    for (int j = 0; j < NT; ++j) y[(r + i) * yStride + n + j] = hsum(acc[i][j]) + (bias ? bias[n + j] : 0.0f);
  }
}

template <int RT, int NT>
inline void featureSweep(const float* x, int64_t xStride, int64_t r, const uint8_t* codes, const uint16_t* scales,
                         int64_t n0, int64_t n1, int64_t K, int64_t G, const float* bias, float* y, int64_t yStride) {
  int64_t n = n0;
  for (; n + NT <= n1; n += NT) microTile<RT, NT>(x, xStride, r, codes, scales, n, K, G, bias, y, yStride);
  for (; n < n1; ++n) microTile<RT, 1>(x, xStride, r, codes, scales, n, K, G, bias, y, yStride);
}

}  // namespace

void dequantizeInt4Rows(const uint8_t* codes, const uint16_t* scales, int64_t n0, int64_t n1, int64_t K, int64_t G,
                        float* out) {
  const __m128i low4 = _mm_set1_epi8(0x0f);
  const __m128i eight = _mm_set1_epi8(8);
  const int64_t groups = K / G;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = codes + n * (K / 2);
    float* o = out + (n - n0) * K;
    for (int64_t k = 0; k < K; k += 32) {
      const __m256 s = scaleOf(scales, n * groups + k / G);
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + k / 2));
      const __m128i lo = _mm_sub_epi8(_mm_and_si128(b, low4), eight);
      const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(b, 4), low4), eight);
      const __m128i q[4] = {lo, _mm_unpackhi_epi64(lo, lo), hi, _mm_unpackhi_epi64(hi, hi)};
      for (int v = 0; v < 4; ++v) {
        _mm256_storeu_ps(o + k + 8 * v, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q[v])), s));
      }
    }
  }
}

// Row groups 4 x 2, 3 x 3, 2 x 4 and 1 x 6 (decode): besides the accumulators, each weight row holds two
// registers of codes and a scale, so the tiles are narrower than the 16-bit ones.
void linearTileInt4(const float* x, int64_t xStride, int64_t r0, int64_t r1, const uint8_t* codes,
                    const uint16_t* scales, int64_t n0, int64_t n1, int64_t K, int64_t G, const float* bias, float* y,
                    int64_t yStride) {
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) featureSweep<4, 2>(x, xStride, r, codes, scales, n0, n1, K, G, bias, y, yStride);
  switch (r1 - r) {
    case 3: featureSweep<3, 3>(x, xStride, r, codes, scales, n0, n1, K, G, bias, y, yStride); break;
    case 2: featureSweep<2, 4>(x, xStride, r, codes, scales, n0, n1, K, G, bias, y, yStride); break;
    case 1: featureSweep<1, 6>(x, xStride, r, codes, scales, n0, n1, K, G, bias, y, yStride); break;
    default: break;
  }
}

}  // namespace avx2
}  // namespace kiln
