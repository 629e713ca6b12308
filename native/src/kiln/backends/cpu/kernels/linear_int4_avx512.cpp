// AVX-512 F/BW/VL body of linearInt4Kernel (linear_int4.cpp). See avx512.h for why everything here has
// internal linkage. A 32-element block's 16 bytes give 16 low-nibble codes (elements 0-15) and 16
// high-nibble codes (16-31): each widens to one 16-lane vector of indices that lines up with 16
// contiguous x, so a block is two FMAs per row. The weights come from a 16-entry table per row and group,
// (i - 8) * scale for i in 0..15 (exact in float32), looked up with one vpermps: a 16-lane zmm holds the
// whole table, which replaces the subtract, int-to-float conversion and multiply of each code vector.
#include <immintrin.h>

#include <cstring>

#include "kiln/backends/cpu/kernels/avx512.h"

namespace kiln {
namespace avx512 {

namespace {

inline __m512 scaleOf(const uint16_t* scales, int64_t i) {
  const uint32_t bits = static_cast<uint32_t>(scales[i]) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return _mm512_set1_ps(f);
}


template <int RT, int NT>
inline void microTile(const float* x, int64_t xStride, int64_t r, const uint8_t* codes, const uint16_t* scales,
                      int64_t n, int64_t K, int64_t G, const float* bias, float* y, int64_t yStride) {
  __m512 acc[RT][NT];
  for (int i = 0; i < RT; ++i)
    for (int j = 0; j < NT; ++j) acc[i][j] = _mm512_setzero_ps();
  const float* xr[RT];
  for (int i = 0; i < RT; ++i) xr[i] = x + (r + i) * xStride;
  const int64_t rowBytes = K / 2;
  const int64_t groups = K / G;
  const __m128i low4 = _mm_set1_epi8(0x0f);
  const __m512 codes16 = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t g = 0; g < groups; ++g) {
    __m512 table[NT];
    for (int j = 0; j < NT; ++j) table[j] = _mm512_mul_ps(codes16, scaleOf(scales, (n + j) * groups + g));
    for (int64_t k = g * G; k < (g + 1) * G; k += 32) {
      // Decode: prefetch the next tile's rows one tile ahead, a cache line (128 codes) at a time.
      if (RT == 1 && (k & 127) == 0) {
        for (int j = 0; j < NT; ++j) _mm_prefetch(reinterpret_cast<const char*>(codes + (n + NT + j) * rowBytes + k / 2), _MM_HINT_T0);
      }
      __m512 wlo[NT], whi[NT];
      for (int j = 0; j < NT; ++j) {
        const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + (n + j) * rowBytes + k / 2));
        wlo[j] = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_and_si128(b, low4)), table[j]);
        whi[j] = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(b, 4), low4)), table[j]);
      }
      for (int i = 0; i < RT; ++i) {
        const __m512 xlo = _mm512_loadu_ps(xr[i] + k);
        const __m512 xhi = _mm512_loadu_ps(xr[i] + k + 16);
        for (int j = 0; j < NT; ++j) {
          acc[i][j] = _mm512_fmadd_ps(xlo, wlo[j], acc[i][j]);
          acc[i][j] = _mm512_fmadd_ps(xhi, whi[j], acc[i][j]);
        }
      }
    }
  }
  for (int i = 0; i < RT; ++i) {
    for (int j = 0; j < NT; ++j) y[(r + i) * yStride + n + j] = _mm512_reduce_add_ps(acc[i][j]) + (bias ? bias[n + j] : 0.0f);
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

// Row groups 4 x 4, 3 x 4, 2 x 6 and 1 x 8 (decode: 8 streams of codes in flight); 4, 6 and 8 divide
// linear_int4.cpp's 48-feature blocks.
void linearTileInt4(const float* x, int64_t xStride, int64_t r0, int64_t r1, const uint8_t* codes,
                    const uint16_t* scales, int64_t n0, int64_t n1, int64_t K, int64_t G, const float* bias, float* y,
                    int64_t yStride) {
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) featureSweep<4, 4>(x, xStride, r, codes, scales, n0, n1, K, G, bias, y, yStride);
  switch (r1 - r) {
    case 3: featureSweep<3, 4>(x, xStride, r, codes, scales, n0, n1, K, G, bias, y, yStride); break;
    case 2: featureSweep<2, 6>(x, xStride, r, codes, scales, n0, n1, K, G, bias, y, yStride); break;
    case 1: featureSweep<1, 8>(x, xStride, r, codes, scales, n0, n1, K, G, bias, y, yStride); break;
    default: break;
  }
}

}  // namespace avx512
}  // namespace kiln
