// AVX512_BF16 body of linearKernel for bfloat16 weights with bfloat16-rounded activations. vdpbf16ps
// multiplies 32 bfloat16 pairs per instruction into 16 float32 sums (each product exact in float32, the
// adds rounded as float32): twice the multiply-adds of a float32 FMA, and the weights need no widening.
// See avx512.h for why everything here has internal linkage.
#include <immintrin.h>

#include "kiln/backends/cpu/kernels/avx512.h"
#include "kiln/backends/cpu/kernels/decode_streams.h"

namespace kiln {
namespace avx512bf16 {

namespace {

inline __m512bh load32(const uint16_t* p, __mmask32 m) {
  return (__m512bh)_mm512_maskz_loadu_epi16(m, p);  // the same 512 bits, typed as 32 bfloat16
}

// RT rows of xb times NT weight rows; both operands are zero outside the mask, so the tail of K adds 0.
template <int RT, int NT>
inline void microTile(const uint16_t* xb, int64_t r, const uint16_t* w, int64_t n, int64_t K, const float* bias,
                      float* y, int64_t yStride) {
  __m512 acc[RT][NT];
  for (int i = 0; i < RT; ++i)
    for (int j = 0; j < NT; ++j) acc[i][j] = _mm512_setzero_ps();
  auto step = [&](int64_t k, __mmask32 m) {
    __m512bh wv[NT];
    for (int j = 0; j < NT; ++j) wv[j] = load32(w + (n + j) * K + k, m);
    for (int i = 0; i < RT; ++i) {
      const __m512bh xv = load32(xb + (r + i) * K + k, m);
      for (int j = 0; j < NT; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
    }
  };
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    // One row (decode) streams the weights from memory NT rows (pages) at a time; the hardware prefetcher
    // stops at page boundaries, so fetch the same position of the next tile's rows one tile ahead.
    // Measured on the 1.1B-shaped engine (builds alternated, 2 threads): 12 rows without this prefetch
    // decoded ~35% slower, 12 rows with it ~50% slower, and fetching two tiles ahead no faster, although
    // a bare loop over the same matrices ran 12 rows without prefetch at the memchr rate.
    if (RT == 1) {
      for (int j = 0; j < NT; ++j) _mm_prefetch(reinterpret_cast<const char*>(w + (n + NT + j) * K + k), _MM_HINT_T0);
    }
    step(k, 0xffffffffu);
  }
  if (k < K) step(k, static_cast<__mmask32>((uint64_t{1} << (K - k)) - 1));
  for (int i = 0; i < RT; ++i) {
    for (int j = 0; j < NT; ++j) {
      y[(r + i) * yStride + n + j] = _mm512_reduce_add_ps(acc[i][j]) + (bias ? bias[n + j] : 0.0f);
    }
  }
}

template <int RT, int NT>
inline void featureSweep(const uint16_t* xb, int64_t r, const uint16_t* w, int64_t n0, int64_t n1, int64_t K,
                         const float* bias, float* y, int64_t yStride) {
  int64_t n = n0;
  for (; n + NT <= n1; n += NT) microTile<RT, NT>(xb, r, w, n, K, bias, y, yStride);
  for (; n < n1; ++n) microTile<RT, 1>(xb, r, w, n, K, bias, y, yStride);
}

// One row of xb times NR bfloat16 weight rows w[j] (far apart: the caller's streams), 64 weights a step
// with two accumulators per row (independent vdpbf16ps chains).
template <int NR>
inline void decodeRowsBf16(const uint16_t* xb, const uint16_t* const* w, int64_t K, float* out) {
  __m512 acc[NR][2];
  for (int j = 0; j < NR; ++j) acc[j][0] = acc[j][1] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 64 <= K; k += 64) {
    const __m512bh x0 = load32(xb + k, 0xffffffffu);
    const __m512bh x1 = load32(xb + k + 32, 0xffffffffu);
    for (int j = 0; j < NR; ++j) {
      acc[j][0] = _mm512_dpbf16_ps(acc[j][0], x0, load32(w[j] + k, 0xffffffffu));
      acc[j][1] = _mm512_dpbf16_ps(acc[j][1], x1, load32(w[j] + k + 32, 0xffffffffu));
    }
  }
  for (; k < K; k += 32) {
    const __mmask32 m = K - k >= 32 ? 0xffffffffu : static_cast<__mmask32>((uint64_t{1} << (K - k)) - 1);
    const __m512bh xv = load32(xb + k, m);
    for (int j = 0; j < NR; ++j) acc[j][0] = _mm512_dpbf16_ps(acc[j][0], xv, load32(w[j] + k, m));
  }
  for (int j = 0; j < NR; ++j) out[j] = _mm512_reduce_add_ps(_mm512_add_ps(acc[j][0], acc[j][1]));
}

}  // namespace

void decodeBf16(const uint16_t* xb, const uint16_t* w, int64_t n0, int64_t n1, int64_t K, const float* bias, float* y) {
  const auto store = [&](int64_t n, float dot) { y[n] = dot + (bias ? bias[n] : 0.0f); };
  forEachStreamedRow(
      n0, n1,
      [&](const int64_t (&at)[4]) {
        const uint16_t* rows[4] = {w + at[0] * K, w + at[1] * K, w + at[2] * K, w + at[3] * K};
        float out[4];
        decodeRowsBf16<4>(xb, rows, K, out);
        for (int j = 0; j < 4; ++j) store(at[j], out[j]);
      },
      [&](int64_t n) {
        const uint16_t* row = w + n * K;
        float out;
        decodeRowsBf16<1>(xb, &row, K, &out);
        store(n, out);
      });
}

// The row groups of the float32 AVX-512 tile (24 accumulators, 6/8/12 dividing the 48-feature blocks).
void linearTileBf16(const uint16_t* xb, int64_t r0, int64_t r1, const uint16_t* w, int64_t n0, int64_t n1, int64_t K,
                    const float* bias, float* y, int64_t yStride) {
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) featureSweep<4, 6>(xb, r, w, n0, n1, K, bias, y, yStride);
  switch (r1 - r) {
    case 3: featureSweep<3, 8>(xb, r, w, n0, n1, K, bias, y, yStride); break;
    case 2: featureSweep<2, 12>(xb, r, w, n0, n1, K, bias, y, yStride); break;
    case 1: featureSweep<1, 8>(xb, r, w, n0, n1, K, bias, y, yStride); break;
    default: break;
  }
}

}  // namespace avx512bf16
}  // namespace kiln
