// AVX2 tile and activation quantizer of linearInt4Kernel (linear_int4.cpp states the maths; avx2.h why
// everything here has internal linkage). Also the plain AVX-512 set's tile. A step is two 32-element
// blocks of a weight row: a 32-byte load of their nibbles, an and and a shift give the low nibbles
// (elements 0-15 of each block, one block per 128-bit lane) and the high ones (16-31), lined up with half
// of an activation unit (kernels.h). vpmaddubsw multiplies the unsigned nibbles by the signed int8
// activations into int16 pairs (at most 2 * 15 * 127, and the low and high sums added, 4 * 15 * 127: no
// saturation), vpmaddwd with ones widens them to four int32 lanes per block, and the block's correction
// -8 * sum(x codes) makes each lane group its block's exact dot product, then scaled by dw * dx.
#include <immintrin.h>

#include <cstring>

#include "kiln/backends/cpu/kernels/avx2.h"
#include "kiln/backends/cpu/kernels/avx2_math.h"

namespace kiln {
namespace avx2 {

namespace {

template <int RT, int NT>
inline void microTile(const int8_t* xq, const float* xd, const int32_t* xc, int64_t qStride, int64_t sStride,
                      int64_t r, const uint8_t* codes, const uint16_t* bscales, int64_t bsStride, int64_t n0,
                      int64_t n, int64_t K, const float* bias, float* y, int64_t yStride) {
  __m256 acc[RT][NT];
  for (int i = 0; i < RT; ++i)
    for (int j = 0; j < NT; ++j) acc[i][j] = _mm256_setzero_ps();
  const int64_t rowBytes = K / 2;
  const int64_t blocks = K / 32;
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i spread = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
  for (int64_t b = 0; b < blocks; b += 2) {
    // Block pair (b, b + 1): half h of unit u of the activations. An odd last block pairs with zeros.
    const int64_t u = b / 4;
    const int64_t h = (b % 4) / 2;
    const bool pair = b + 1 < blocks;
    if (RT == 1 && (b & 3) == 0) {
      for (int j = 0; j < NT; ++j) _mm_prefetch(reinterpret_cast<const char*>(codes + (n + NT + j) * rowBytes + b * 16), _MM_HINT_T0);
    }
    __m256i lo[NT], hi[NT];
    __m256 dw[NT];
    for (int j = 0; j < NT; ++j) {
      const uint8_t* p = codes + (n + j) * rowBytes + b * 16;
      const __m256i v = pair ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
                             : _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
      lo[j] = _mm256_and_si256(v, low4);
      hi[j] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
      const uint16_t* s = bscales + (n + j - n0) * bsStride + b;
      uint32_t two = s[0];
      if (pair) two |= static_cast<uint32_t>(s[1]) << 16;
      dw[j] = _mm256_castsi256_ps(_mm256_slli_epi32(
          _mm256_permutevar8x32_epi32(_mm256_cvtepu16_epi32(_mm_cvtsi32_si128(static_cast<int>(two))), spread), 16));
    }
    for (int i = 0; i < RT; ++i) {
      const int8_t* qr = xq + (r + i) * qStride + u * 128 + h * 32;
      const __m256i xlo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qr));
      const __m256i xhi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qr + 64));
      const __m256i corr = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xc + (r + i) * sStride + u * 16 + h * 8));
      const __m256 dx = _mm256_loadu_ps(xd + (r + i) * sStride + u * 16 + h * 8);
      for (int j = 0; j < NT; ++j) {
        const __m256i pairs = _mm256_add_epi16(_mm256_maddubs_epi16(lo[j], xlo), _mm256_maddubs_epi16(hi[j], xhi));
        const __m256i dot = _mm256_add_epi32(_mm256_madd_epi16(pairs, ones), corr);
        acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(dw[j], dx), acc[i][j]);
      }
    }
  }
  for (int i = 0; i < RT; ++i) {
    for (int j = 0; j < NT; ++j) y[(r + i) * yStride + n + j] = hsum(acc[i][j]) + (bias ? bias[n + j] : 0.0f);
  }
}

template <int RT, int NT>
inline void featureSweep(const int8_t* xq, const float* xd, const int32_t* xc, int64_t qStride, int64_t sStride,
                         int64_t r, const uint8_t* codes, const uint16_t* bscales, int64_t bsStride, int64_t n0,
                         int64_t n1, int64_t K, const float* bias, float* y, int64_t yStride) {
  int64_t n = n0;
  for (; n + NT <= n1; n += NT) microTile<RT, NT>(xq, xd, xc, qStride, sStride, r, codes, bscales, bsStride, n0, n, K, bias, y, yStride);
  for (; n < n1; ++n) microTile<RT, 1>(xq, xd, xc, qStride, sStride, r, codes, bscales, bsStride, n0, n, K, bias, y, yStride);
}

}  // namespace

// Produces exactly the portable quantizer's codes (the same float32 max, division and product; the
// conversion rounds half to even under the default rounding mode, as nearbyint does).
void quantizeInt4ActivationRow(const float* x, int64_t K, int8_t* q, float* d, int32_t* c) {
  const int64_t blocks = K / 32;
  const int64_t units = (blocks + 3) / 4;
  const __m256 absMask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int64_t b = 0; b < blocks; ++b) {
    __m256 v[4];
    __m256 m = _mm256_setzero_ps();
    for (int t = 0; t < 4; ++t) {
      v[t] = _mm256_loadu_ps(x + b * 32 + 8 * t);
      m = _mm256_max_ps(m, _mm256_and_ps(v[t], absMask));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    const __m256 id = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
    __m256i iv[4];
    for (int t = 0; t < 4; ++t) iv[t] = _mm256_cvtps_epi32(_mm256_mul_ps(v[t], id));
    // packs interleave 128-bit lanes: [0-3 8-11 16-19 24-27 | 4-7 12-15 20-23 28-31]; the permute restores order.
    const __m256i packed = _mm256_permutevar8x32_epi32(
        _mm256_packs_epi16(_mm256_packs_epi32(iv[0], iv[1]), _mm256_packs_epi32(iv[2], iv[3])), order);
    int8_t* unit = q + (b / 4) * 128 + (b % 4) * 16;
    _mm_storeu_si128(reinterpret_cast<__m128i*>(unit), _mm256_castsi256_si128(packed));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(unit + 64), _mm256_extracti128_si256(packed, 1));
    const __m256i s8 = _mm256_add_epi32(_mm256_add_epi32(iv[0], iv[1]), _mm256_add_epi32(iv[2], iv[3]));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s8), _mm256_extracti128_si256(s8, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
    _mm_storeu_ps(d + b * 4, _mm_set1_ps(amax / 127.0f));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(c + b * 4), _mm_setr_epi32(-8 * _mm_cvtsi128_si32(s4), 0, 0, 0));
  }
  for (int64_t b = blocks; b < units * 4; ++b) {
    int8_t* unit = q + (b / 4) * 128 + (b % 4) * 16;
    std::memset(unit, 0, 16);
    std::memset(unit + 64, 0, 16);
    std::memset(d + b * 4, 0, 4 * sizeof(float));
    std::memset(c + b * 4, 0, 4 * sizeof(int32_t));
  }
}

// Row groups 2 x 2 and 1 x 4 (decode): 16 ymm registers hold the accumulators, each weight row's low and
// high nibbles and scales, and one row of activations.
void linearTileInt4(const int8_t* xq, const float* xd, const int32_t* xc, int64_t qStride, int64_t sStride,
                    int64_t r0, int64_t r1, const uint8_t* codes, const uint16_t* bscales, int64_t bsStride,
                    int64_t n0, int64_t n1, int64_t K, const float* bias, float* y, int64_t yStride) {
  int64_t r = r0;
  for (; r + 2 <= r1; r += 2) featureSweep<2, 2>(xq, xd, xc, qStride, sStride, r, codes, bscales, bsStride, n0, n1, K, bias, y, yStride);
  if (r < r1) featureSweep<1, 4>(xq, xd, xc, qStride, sStride, r, codes, bscales, bsStride, n0, n1, K, bias, y, yStride);
}

}  // namespace avx2
}  // namespace kiln
