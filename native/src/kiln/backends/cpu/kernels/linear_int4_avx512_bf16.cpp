// AVX512_VNNI tile of linearInt4Kernel (linear_int4.cpp states the maths; avx512.h why everything here has
// internal linkage). A step is four 32-element blocks of a weight row: one 64-byte load of their nibbles,
// an and and a shift give the low nibbles (elements 0-15 of each block, one block per 128-bit lane) and the
// high ones (16-31), which line up with the activation layout's two 64-byte halves of a unit (kernels.h).
// vpdpbusd multiplies the unsigned nibbles (code + 8) by the signed int8 activations, 64 pairs an
// instruction, into four int32 lanes per block, on top of the block's correction -8 * sum(x codes), so
// each 128-bit lane sums to its block's exact integer dot product; one conversion and one FMA then scale
// the four blocks by dw * dx (the weight's bfloat16 scale spread over its lane, times the activation's).
#include <immintrin.h>

#include "kiln/backends/cpu/kernels/avx512.h"

namespace kiln {
namespace avx512bf16 {

namespace {

template <int RT, int NT>
inline void microTile(const int8_t* xq, const float* xd, const int32_t* xc, int64_t qStride, int64_t sStride,
                      int64_t r, const uint8_t* codes, const uint16_t* bscales, int64_t bsStride, int64_t n0,
                      int64_t n, int64_t K, const float* bias, float* y, int64_t yStride) {
  __m512 acc[RT][NT];
  for (int i = 0; i < RT; ++i)
    for (int j = 0; j < NT; ++j) acc[i][j] = _mm512_setzero_ps();
  const int64_t rowBytes = K / 2;
  const int64_t blocks = K / 32;
  const int64_t full = blocks / 4;
  const int64_t units = (blocks + 3) / 4;
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  // 16-bit lane 2m + 1 takes block m / 4's scale bits (the high half of float lane m); even lanes are zeroed.
  const __m512i spread16 = _mm512_set_epi16(3, 0, 3, 0, 3, 0, 3, 0, 2, 0, 2, 0, 2, 0, 2, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  const uint8_t* wr[NT];
  const uint16_t* sr[NT];
  for (int j = 0; j < NT; ++j) {
    wr[j] = codes + (n + j) * rowBytes;
    sr[j] = bscales + (n + j - n0) * bsStride;
  }
  // A row's last unit may hold 1-3 blocks: masked loads read only those (never past the matrix), and the
  // activation layout's zero padding makes the missing blocks add nothing.
  const int64_t rem = blocks % 4;
  const __mmask64 tailCodes = rem ? (uint64_t{1} << (16 * rem)) - 1 : ~uint64_t{0};
  const __mmask8 tailScales = static_cast<__mmask8>(rem ? (1u << rem) - 1 : 0xf);
  for (int64_t u = 0; u < units; ++u) {
    const __mmask64 cm = u < full ? ~uint64_t{0} : tailCodes;
    const __mmask8 sm = u < full ? static_cast<__mmask8>(0xf) : tailScales;
    // Decode streams the codes from memory NT rows at a time: fetch the same unit of the next tile's rows
    // one tile ahead (a unit is one cache line of each row).
    if (RT == 1) {
      for (int j = 0; j < NT; ++j) _mm_prefetch(reinterpret_cast<const char*>(wr[j] + NT * rowBytes + u * 64), _MM_HINT_T0);
    }
    __m512i lo[NT], hi[NT];
    __m512 dw[NT];
    for (int j = 0; j < NT; ++j) {
      const __m512i b = _mm512_maskz_loadu_epi8(cm, wr[j] + u * 64);
      lo[j] = _mm512_and_si512(b, low4);
      hi[j] = _mm512_and_si512(_mm512_srli_epi16(b, 4), low4);
      const __m128i s = _mm_maskz_loadu_epi16(sm, sr[j] + u * 4);
      // bfloat16 bits to float32 in one vpermw: block i's bits into the high half of lane i's four floats,
      // low halves zeroed (3 instructions before: widen, spread, shift; decode 7-10% faster in cache).
      dw[j] = _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(0xAAAAAAAAu, spread16, _mm512_castsi128_si512(s)));
    }
    for (int i = 0; i < RT; ++i) {
      const int8_t* qr = xq + (r + i) * qStride + u * 128;
      const __m512i xlo = _mm512_load_si512(qr);
      const __m512i xhi = _mm512_load_si512(qr + 64);
      const __m512i corr = _mm512_load_si512(xc + (r + i) * sStride + u * 16);
      const __m512 dx = _mm512_load_ps(xd + (r + i) * sStride + u * 16);
      for (int j = 0; j < NT; ++j) {
        const __m512i dot = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(corr, lo[j], xlo), hi[j], xhi);
        acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw[j], dx), acc[i][j]);
      }
    }
  }
  for (int i = 0; i < RT; ++i) {
    for (int j = 0; j < NT; ++j) y[(r + i) * yStride + n + j] = _mm512_reduce_add_ps(acc[i][j]) + (bias ? bias[n + j] : 0.0f);
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

// Row pairs 2 x 4 and a last row 1 x 8 or 1 x 4 (decode: rows of codes in flight); 4 and 8 divide
// linear_int4.cpp's 48-feature blocks. Each weight row holds three registers (low and high nibbles, scales),
// and each x row four loads a step. Measured on one Zen 4 core, 384 rows x [2048, 2048], one run each
// alternating in one process: 2 x 4 at 96 GMAC/s, 3 x 4 at 82, 4 x 4 at 76, 4 x 3 at 64, 2 x 6 at 72 (the
// larger tiles spill); the float32 int4 tile before this one ran at 46-50.
void linearTileInt4(const int8_t* xq, const float* xd, const int32_t* xc, int64_t qStride, int64_t sStride,
                    int64_t r0, int64_t r1, const uint8_t* codes, const uint16_t* bscales, int64_t bsStride,
                    int64_t n0, int64_t n1, int64_t K, const float* bias, float* y, int64_t yStride) {
  int64_t r = r0;
  for (; r + 2 <= r1; r += 2) featureSweep<2, 4>(xq, xd, xc, qStride, sStride, r, codes, bscales, bsStride, n0, n1, K, bias, y, yStride);
  // Decode streams NT rows and prefetches the next NT: 8 while those 16 rows' lines stay well inside L1
  // (rows of up to 1.5 KB, K <= 3072), else 4 (K = 5632, a 1.1B model's down_proj: 15.5 against 14.4 GB/s
  // per thread-second streamed from DRAM; at K = 2048, 8 rows give 18.3 against 16.5).
  if (r < r1) {
    if (K / 2 * 8 <= 12288) featureSweep<1, 8>(xq, xd, xc, qStride, sStride, r, codes, bscales, bsStride, n0, n1, K, bias, y, yStride);
    else featureSweep<1, 4>(xq, xd, xc, qStride, sStride, r, codes, bscales, bsStride, n0, n1, K, bias, y, yStride);
  }
}

}  // namespace avx512bf16
}  // namespace kiln
