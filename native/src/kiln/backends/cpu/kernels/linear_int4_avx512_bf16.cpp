// AVX512_VNNI tile of linearInt4Kernel (linear_int4.cpp states the maths; avx512.h why everything here has
// internal linkage). A step is four 32-element blocks of a weight row: one 64-byte load of their nibbles,
// an and and a shift give the low nibbles (elements 0-15 of each block, one block per 128-bit lane) and the
// high ones (16-31), which line up with the activation layout's two 64-byte halves of a unit (kernels.h).
// vpdpbusd multiplies the unsigned nibbles (code + 8) by the signed int8 activations, 64 pairs an
// instruction, into four int32 lanes per block, on top of the block's correction -8 * sum(x codes), so
// each 128-bit lane sums to its block's exact integer dot product; one conversion and one FMA then scale
// the four blocks by dw * dx (the weight's bfloat16 scale spread over its lane, times the activation's).
#include <immintrin.h>

#include <cstdint>
#include <vector>

#include "kiln/backends/cpu/kernels/avx512.h"
#include "kiln/backends/cpu/kernels/decode_streams.h"

namespace kiln {
namespace avx512bf16 {

namespace {

template <int RT, int NT>
inline void microTile(const int8_t* xq, const float* xd, const int32_t* xc, int64_t qStride, int64_t sStride,
                      int64_t r, const uint8_t* codes, const uint16_t* bscales, int64_t bsStride, int64_t n0,
                      int64_t n, int64_t K, const float* bias, float* y, int64_t yStride) {
  __m512 acc[RT][NT];
#pragma GCC unroll 8
  for (int i = 0; i < RT; ++i)
#pragma GCC unroll 8
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
  // One step: unit u of the tile's rows, codes and scales loaded under masks cm and sm. A macro, used
  // for the whole units' loop and the last partial unit apart: with the masks chosen inside one loop,
  // GCC split it in two and stored all RT * NT accumulators to the stack every step.
#define KILN_INT4_STEP(cm, sm)                                                                              \
  {                                                                                                       \
    __m512i lo[NT], hi[NT];                                                                               \
    __m512 dw[NT];                                                                                        \
    _Pragma("GCC unroll 8") for (int j = 0; j < NT; ++j) {                                                \
      const __m512i b = _mm512_maskz_loadu_epi8(cm, wr[j] + u * 64);                                      \
      lo[j] = _mm512_and_si512(b, low4);                                                                  \
      hi[j] = _mm512_and_si512(_mm512_srli_epi16(b, 4), low4);                                            \
      const __m128i s = _mm_maskz_loadu_epi16(sm, sr[j] + u * 4);                                         \
      dw[j] = _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(0xAAAAAAAAu, spread16, _mm512_castsi128_si512(s))); \
    }                                                                                                     \
    _Pragma("GCC unroll 8") for (int i = 0; i < RT; ++i) {                                                \
      const int8_t* qr = xq + (r + i) * qStride + u * 128;                                                \
      const __m512i xlo = _mm512_load_si512(qr);                                                          \
      const __m512i xhi = _mm512_load_si512(qr + 64);                                                     \
      const __m512i corr = _mm512_load_si512(xc + (r + i) * sStride + u * 16);                            \
      const __m512 dx = _mm512_load_ps(xd + (r + i) * sStride + u * 16);                                  \
      _Pragma("GCC unroll 8") for (int j = 0; j < NT; ++j) {                                              \
        const __m512i dot = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(corr, lo[j], xlo), hi[j], xhi);       \
        acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw[j], dx), acc[i][j]);        \
      }                                                                                                   \
    }                                                                                                     \
  }
  // bfloat16 bits to float32 in one vpermw: block i's bits into the high half of lane i's four floats,
  // low halves zeroed (3 instructions before: widen, spread, shift; decode 7-10% faster in cache).
  int64_t u = 0;
  for (; u < full; ++u) KILN_INT4_STEP(~uint64_t{0}, static_cast<__mmask8>(0xf))
  if (u < units) KILN_INT4_STEP(tailCodes, tailScales)
#undef KILN_INT4_STEP
  // Unrolled like every loop over acc: one indexed at run time keeps acc in memory, and GCC then stores
  // every accumulator to the stack on every step.
#pragma GCC unroll 8
  for (int i = 0; i < RT; ++i) {
#pragma GCC unroll 8
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

// Decode (one row of x). Each weight row is read in address order, and a thread's range of rows is cut
// into four quarters read side by side, four sequential streams far apart that the hardware prefetcher
// runs ahead of. Measured on one Zen 5 core under load, the 1.1B engine's int4 matrices from DRAM: the
// 1 x 8 micro-tile (eight adjacent rows a line at a time, eight short streams) 18-19 GB/s, one row at a
// time 20-22, two adjacent rows side by side 12, two far-apart streams 26, four 33-35 (64 rows apart
// 29-30), eight 15 (spills). Software prefetch on top of the sequential order did not help.
// A step is four units (16 blocks, 256 bytes) of a row: their integer dot products are reduced across
// each block's four int32 lanes by one unpack tree for all four units, which leaves the 16 blocks' exact
// sums in one vector, lane 4q + i = block q of unit i. So one conversion, one scale product and one FMA
// serve 16 blocks where microTile spends them on every unit of 4. The weight scales are one 32-byte load
// put into that lane order by one vpermw; the activation scales and corrections are permuted once a call.
inline __m512i unitDot(__m512i b, const __m512i low4, const int8_t* q) {
  // One load of the codes for both nibble halves (GCC otherwise folds a second load into the shift).
  __asm__("" : "+v"(b));
  const __m512i lo = _mm512_and_si512(b, low4);
  const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(b, 4), low4);
  return _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, _mm512_load_si512(q)), hi,
                             _mm512_load_si512(q + 64));
}

// The 16 block sums of four units' dot vectors a, b, c, d (four int32 partials per block): lane 4q + i
// of the result is block q of unit i (the int8 multi-row kernel's reduce4 tree without its last folds).
inline __m512i blockSums(__m512i a, __m512i b, __m512i c, __m512i d) {
  const __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
  const __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
  return _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
}

// out[j] = the dot product of weight row w[j] (scales s[j]) with the x row (codes xq; corrections cp and
// scales dxp in step lane order), for NR rows side by side.
template <int NR>
inline void decodeRows(const int8_t* xq, const int32_t* cp, const float* dxp, const uint8_t* const* w,
                       const uint16_t* const* s, int64_t K, float* out) {
  const int64_t blocks = K / 32;
  const int64_t fullSteps = blocks / 16;  // steps of four whole units
  const int64_t tailBlocks = blocks - fullSteps * 16;
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  // 16-bit lane 2m + 1 (float lane m = 4q + i) takes scale 4i + q into the high half of the float; even
  // lanes are zeroed.
  const __m512i spread16 = _mm512_set_epi16(15, 0, 11, 0, 7, 0, 3, 0, 14, 0, 10, 0, 6, 0, 2, 0, 13, 0, 9, 0, 5, 0, 1, 0,
                                            12, 0, 8, 0, 4, 0, 0, 0);
  __m512 acc[NR];
  for (int j = 0; j < NR; ++j) acc[j] = _mm512_setzero_ps();
  for (int64_t t = 0; t < fullSteps; ++t) {
    const int8_t* q = xq + t * 512;
    for (int j = 0; j < NR; ++j) {
      const uint8_t* wt = w[j] + t * 256;
      const __m512i d0 = unitDot(_mm512_loadu_si512(wt), low4, q);
      const __m512i d1 = unitDot(_mm512_loadu_si512(wt + 64), low4, q + 128);
      const __m512i d2 = unitDot(_mm512_loadu_si512(wt + 128), low4, q + 256);
      const __m512i d3 = unitDot(_mm512_loadu_si512(wt + 192), low4, q + 384);
      const __m512 dw = _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(
          0xAAAAAAAAu, spread16, _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s[j] + t * 16)))));
      const __m512i sums = _mm512_add_epi32(blockSums(d0, d1, d2, d3), _mm512_load_si512(cp + t * 16));
      acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), _mm512_mul_ps(dw, _mm512_load_ps(dxp + t * 16)), acc[j]);
    }
  }
  if (tailBlocks > 0) {
    // 1-15 blocks in 1-4 units, the last maybe partial: masked loads read only the row's codes and
    // scales, and the activation layout's zero padding (and zero dxp, cp) make missing blocks add nothing.
    const int8_t* q = xq + fullSteps * 512;
    const __mmask16 sm = static_cast<__mmask16>((1u << tailBlocks) - 1);
    for (int j = 0; j < NR; ++j) {
      const __m512i zero = _mm512_setzero_si512();
      __m512i d[4] = {zero, zero, zero, zero};
      const uint8_t* wt = w[j] + fullSteps * 256;
      for (int64_t i = 0; i * 4 < tailBlocks; ++i) {
        const int64_t left = tailBlocks - 4 * i;  // blocks of this unit present
        const __mmask64 cm = left >= 4 ? ~uint64_t{0} : (uint64_t{1} << (16 * left)) - 1;
        d[i] = unitDot(_mm512_maskz_loadu_epi8(cm, wt + i * 64), low4, q + i * 128);
      }
      const __m512 dw = _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(
          0xAAAAAAAAu, spread16, _mm512_castsi256_si512(_mm256_maskz_loadu_epi16(sm, s[j] + fullSteps * 16))));
      const __m512i sums = _mm512_add_epi32(blockSums(d[0], d[1], d[2], d[3]), _mm512_load_si512(cp + fullSteps * 16));
      acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), _mm512_mul_ps(dw, _mm512_load_ps(dxp + fullSteps * 16)), acc[j]);
    }
  }
  for (int j = 0; j < NR; ++j) out[j] = _mm512_reduce_add_ps(acc[j]);
}

void decodeSweep(const int8_t* xq, const float* xd, const int32_t* xc, const uint8_t* codes, const uint16_t* bscales,
                 int64_t bsStride, int64_t n0, int64_t n1, int64_t K, const float* bias, float* y) {
  const int64_t blocks = K / 32;
  const int64_t steps = (blocks + 15) / 16;
  // dx and the corrections -8 * sum(x codes) in step lane order (lane 4q + i <- block 4i + q of the
  // step), zero past the last block.
  thread_local std::vector<float> dxpStore;
  thread_local std::vector<int32_t> cpStore;
  dxpStore.assign(static_cast<size_t>(steps * 16 + 16), 0.0f);
  cpStore.assign(static_cast<size_t>(steps * 16 + 16), 0);
  float* dxp = dxpStore.data() + (16 - (reinterpret_cast<uintptr_t>(dxpStore.data()) / 4) % 16) % 16;
  int32_t* cp = cpStore.data() + (16 - (reinterpret_cast<uintptr_t>(cpStore.data()) / 4) % 16) % 16;
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t lane = (b / 16) * 16 + 4 * (b % 4) + (b % 16) / 4;
    dxp[lane] = xd[b * 4];
    cp[lane] = xc[b * 4];
  }
  const int64_t rowBytes = K / 2;
  // bscales starts at row n0.
  const auto store = [&](int64_t n, float dot) { y[n] = dot + (bias ? bias[n] : 0.0f); };
  forEachStreamedRow(
      n0, n1,
      [&](const int64_t (&at)[4]) {
        const uint8_t* w[4];
        const uint16_t* s[4];
        for (int j = 0; j < 4; ++j) {
          w[j] = codes + at[j] * rowBytes;
          s[j] = bscales + (at[j] - n0) * bsStride;
        }
        float out[4];
        decodeRows<4>(xq, cp, dxp, w, s, K, out);
        for (int j = 0; j < 4; ++j) store(at[j], out[j]);
      },
      [&](int64_t n) {
        const uint8_t* w = codes + n * rowBytes;
        const uint16_t* s = bscales + (n - n0) * bsStride;
        float out;
        decodeRows<1>(xq, cp, dxp, &w, &s, K, &out);
        store(n, out);
      });
}

}  // namespace

// Row triples 3 x 4 (4 divides linear_int4.cpp's 48-feature blocks), then a pair 2 x 4, and a last row by
// decodeSweep. Each weight row holds three registers (low and high nibbles, scales), and each x row four
// loads a step. Measured on one Zen 4 core, 384 rows x [2048, 2048], one run each alternating in one
// process: 2 x 4 at 96 GMAC/s, 3 x 4 at 82, 4 x 4 at 76, 4 x 3 at 64, 2 x 6 at 72; the float32 int4 tile
// before this one ran at 46-50. Those larger tiles had spilled: GCC kept the accumulators in memory (see
// microTile's last loop). Without that, on one Zen 5 core under load, 64 rows x 48-feature tiles of the
// 1.1B shapes in L2: 3 x 4 at 152-156 GMAC/s, 2 x 4 at 146-148 (136-140 before the fix), 4 x 4 134-140,
// 2 x 6 131-138, 4 x 3 100-108.
void linearTileInt4(const int8_t* xq, const float* xd, const int32_t* xc, int64_t qStride, int64_t sStride,
                    int64_t r0, int64_t r1, const uint8_t* codes, const uint16_t* bscales, int64_t bsStride,
                    int64_t n0, int64_t n1, int64_t K, const float* bias, float* y, int64_t yStride) {
  int64_t r = r0;
  for (; r + 3 <= r1; r += 3) featureSweep<3, 4>(xq, xd, xc, qStride, sStride, r, codes, bscales, bsStride, n0, n1, K, bias, y, yStride);
  for (; r + 2 <= r1; r += 2) featureSweep<2, 4>(xq, xd, xc, qStride, sStride, r, codes, bscales, bsStride, n0, n1, K, bias, y, yStride);
  // A last row (decode) streams its weight rows (decodeSweep). Measured on one Zen 5 core under load, the
  // 1.1B engine's int4 shapes ([2560 | 2048 | 11264, 2048], [2048, 5632]; 21 layers, 470 MB from DRAM),
  // a whole range a call, alternating in one process: 33-35 against 18-19 GB/s (the 1 x 8 micro-tile it
  // replaces; a plain sequential read of the same bytes ran at 30); in L2, 60 against 53 GB/s.
  if (r < r1) {
    decodeSweep(xq + r * qStride, xd + r * sStride, xc + r * sStride, codes, bscales, bsStride, n0, n1, K, bias,
                y + r * yStride);
  }
}

}  // namespace avx512bf16
}  // namespace kiln
