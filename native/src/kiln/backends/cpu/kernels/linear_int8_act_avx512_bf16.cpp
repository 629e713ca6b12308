// AVX512_VNNI tile of linear_int8_act.cpp (compiled with the *_avx512_bf16.cpp flags, which include
// -mavx512vnni; Isa::Avx512Bf16 implies VNNI, see isa.cpp).
//
// vpdpbusd multiplies unsigned by signed bytes. Rather than llama.cpp's sign juggling (vpsignb has no
// 512-bit form), the weight codes are offset to unsigned: w ^ 0x80 = w + 128 in [0, 255] as a u8, one
// vpxord per weight vector shared by the tile's rows. Then sum_k (w + 128) x = sum_k w x + 128 sum_k x,
// and the row's code sum (made with its codes) removes the offset. Every sum is int32 and wraps like it;
// the true sum_k w x fits (|.| <= 128 * 127 * K, K <= kInt8ActMaxK), so the wrapped difference is exact.
//
// The tile is a dot product along k (16 int32 lanes of 4 products each, reduced at the end), like the
// float tiles, so it reads the engine's row-major codes as they are; no packed copy of the weights.
#include <immintrin.h>

#include <cfloat>

#include "kiln/backends/cpu/kernels/linear_int8_act.h"

namespace kiln {
namespace avx512bf16 {

namespace {

// acc += the u8 x s8 dot products of w and x, in place. GCC 12 compiles _mm512_dpbusd_epi32 in an
// unrolled tile to a copy of the accumulator before and after every vpdpbusd, and spills some to the
// stack: the inline form ties the accumulator to one register (two to three times the tile's speed).
inline void dpbusd(__m512i& acc, __m512i w, __m512i x) {
#if defined(__GNUC__) && !defined(__clang__)
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(w), "v"(x));
#else
  acc = _mm512_dpbusd_epi32(acc, w, x);
#endif
}

// The four horizontal sums of a, b, c, d (16 int32 lanes each) as one vector: pairs of lanes, then pairs
// of pairs, then the four 128-bit quarters. 13 instructions for what four separate reductions do in ~36;
// at K = 2048 the reductions would otherwise cost a quarter of the tile's 32 steps.
inline __m128i reduce4(__m512i a, __m512i b, __m512i c, __m512i d) {
  const __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
  const __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
  // ab per 128-bit quarter: [a0+a2, b0+b2, a1+a3, b1+b3]; cd likewise.
  const __m512i abcd = _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
  // abcd per quarter: [a, b, c, d] partial sums.
  const __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(abcd), _mm512_extracti64x4_epi64(abcd, 1));
  return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

// RT code rows (RT / P rows of x, P code rows each) times NT weight rows (NT = 4, or 1 for a feature
// tail): RT * NT accumulators, NT weight vectors and one x vector live. Each 64-byte weight load serves RT
// code rows, each x load NT weight rows.
// With MAP, r is a position in x.index (P = 1): tile row i is row x.index[r + i], and y is added to.
// `prefetch`: this is the first row tile over these weight rows (below).
template <int P, int RT, int NT, bool MAP>
inline void microTile(const Int8ActRows& x, int64_t r, const int8_t* w, const float* wScale, int64_t n,
                      const float* bias, float* y, int64_t yStride, bool prefetch) {
  static_assert(RT % P == 0, "a row's code rows stay in one tile");
  static_assert(NT == 4 || NT == 1, "reduce4 takes four features");
  static_assert(!MAP || P == 1, "a mapped product reads one code row per row");
  const int64_t K = x.K;
  int64_t cr[RT];   // code row of each tile row
  int64_t row[RT];  // row of y of each tile row
#pragma GCC unroll 8
  for (int i = 0; i < RT; ++i) {
    row[i] = MAP ? x.index[r + i] : r + i / P;
    cr[i] = row[i] * x.stride + x.first + i % P;
  }
  __m512i acc[RT][NT];
#pragma GCC unroll 8
  for (int i = 0; i < RT; ++i)
  #pragma GCC unroll 8
    for (int j = 0; j < NT; ++j) acc[i][j] = _mm512_setzero_si512();
  const int8_t* xr[RT];
#pragma GCC unroll 8
  for (int i = 0; i < RT; ++i) xr[i] = x.codes + cr[i] * K;
  const int8_t* wr[NT];
#pragma GCC unroll 8
  for (int j = 0; j < NT; ++j) wr[j] = w + (n + j) * K;
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  // Every loop over i, j and p is unrolled, so acc stays in registers: a loop left rolled indexes acc at
  // run time, and GCC then stores each accumulator to the stack after every vpdpbusd. The step is a macro
  // rather than a lambda for the same reason (a lambda capturing acc kept it in memory too).
  // Masked-off lanes of the last step: w reads 0 and becomes 128, x reads 0, so they add nothing.
#define KILN_INT8ACT_STEP(LOADW, LOADX)                                              \
  {                                                                                  \
    __m512i wv[NT];                                                                  \
    _Pragma("GCC unroll 8") for (int j = 0; j < NT; ++j) wv[j] = _mm512_xor_si512(LOADW(wr[j] + k), flip); \
    _Pragma("GCC unroll 8") for (int i = 0; i < RT; ++i) {                           \
      const __m512i xv = LOADX(xr[i] + k);                                           \
      _Pragma("GCC unroll 8") for (int j = 0; j < NT; ++j) dpbusd(acc[i][j], wv[j], xv); \
    }                                                                                \
  }
  int64_t k = 0;
  if (prefetch && NT == 4) {
    // The first row tile of a weight group also asks L2 for the next group's rows (the next 4 K bytes,
    // possibly past this task's: a prefetch does not fault). perf showed the 16-row decode steps' tile
    // stalled on its weight loads (~60% of its samples on the vpxord that loads them): each weight byte
    // serves only 16 rows there, and the hardware prefetcher, following 4 streams of K bytes, does not
    // run far enough ahead. Measured in user cycles of the int8 linears (perf, kiln bench 16 x 128/64 at
    // c16, int8, three pairs alternated at load ~7): 17.5-18.4 G with it against 19.4-21.8 G without;
    // int8x2 (one pair) 30.8 against 31.5 G.
    const int8_t* next = w + (n + NT) * K;
    for (; k + 64 <= K; k += 64) {
      KILN_INT8ACT_STEP(_mm512_loadu_si512, _mm512_loadu_si512)
      _Pragma("GCC unroll 8") for (int j = 0; j < NT; ++j) _mm_prefetch(reinterpret_cast<const char*>(next + j * K + k), _MM_HINT_T1);
    }
  }
  for (; k + 64 <= K; k += 64) KILN_INT8ACT_STEP(_mm512_loadu_si512, _mm512_loadu_si512)
  if (k < K) {
    const __mmask64 m = (__mmask64{1} << (K - k)) - 1;
    auto load = [m](const int8_t* p) { return _mm512_maskz_loadu_epi8(m, p); };
    KILN_INT8ACT_STEP(load, load)
  }
#undef KILN_INT8ACT_STEP
#pragma GCC unroll 8
  for (int i = 0; i < RT; i += P) {
    alignas(16) int32_t sums[P][4];
  #pragma GCC unroll 8
    for (int p = 0; p < P; ++p) {
      if (NT == 4) {
        _mm_store_si128(reinterpret_cast<__m128i*>(sums[p]),
                        reduce4(acc[i + p][0], acc[i + p][NT > 1 ? 1 : 0], acc[i + p][NT > 2 ? 2 : 0], acc[i + p][NT > 3 ? 3 : 0]));
      } else {
        sums[p][0] = _mm512_reduce_add_epi32(acc[i + p][0]);
      }
    }
  #pragma GCC unroll 8
    for (int j = 0; j < NT; ++j) {
      float sum = 0.0f;
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) {
        // The +128 offset comes off in wrapping int32, like the lanes summed it (see above).
        const uint32_t offset = static_cast<uint32_t>(x.codeSum[cr[i + p]]) * 128u;
        const int32_t s = static_cast<int32_t>(static_cast<uint32_t>(sums[p][j]) - offset);
        sum += static_cast<float>(s) * x.scale[cr[i + p]];
      }
      if (MAP) {
        y[row[i] * yStride + n + j] += sum * wScale[n + j];
      } else {
        y[row[i] * yStride + n + j] = sum * wScale[n + j] + (bias ? bias[n + j] : 0.0f);
      }
    }
  }
}

// Rows [r0, r1) of x against weight rows [n, n + NT): 6 code rows at a time (24 accumulators), then the
// rest. The NT weight rows (NT * K bytes) stay in L1 while the rows of x stream past them from L2.
template <int P, int NT, bool MAP>
inline void rowSweep(const Int8ActRows& x, int64_t r0, int64_t r1, const int8_t* w, const float* wScale, int64_t n,
                     const float* bias, float* y, int64_t yStride) {
  constexpr int64_t kRows = 6 / P;  // rows of x per 6 code rows
  int64_t r = r0;
  for (; r + kRows <= r1; r += kRows) microTile<P, 6, NT, MAP>(x, r, w, wScale, n, bias, y, yStride, r == r0);
  int64_t left = (r1 - r) * P;  // code rows left: fewer than 6
  if (left >= 4) {
    microTile<P, 4, NT, MAP>(x, r, w, wScale, n, bias, y, yStride, r == r0);
    r += 4 / P;
    left -= 4;
  }
  if (P == 1 && left == 3) {
    microTile<1, 3, NT, MAP>(x, r, w, wScale, n, bias, y, yStride, r == r0);
    return;
  }
  if (left >= 2) {
    microTile<P, 2, NT, MAP>(x, r, w, wScale, n, bias, y, yStride, r == r0);
    r += 2 / P;
    left -= 2;
  }
  if (P == 1 && left == 1) microTile<1, 1, NT, MAP>(x, r, w, wScale, n, bias, y, yStride, r == r0);
}

template <int P, bool MAP>
void tile(const Int8ActRows& x, int64_t r0, int64_t r1, const int8_t* w, const float* wScale, int64_t n0, int64_t n1,
          const float* bias, float* y, int64_t yStride) {
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) rowSweep<P, 4, MAP>(x, r0, r1, w, wScale, n, bias, y, yStride);
  for (; n < n1; ++n) rowSweep<P, 1, MAP>(x, r0, r1, w, wScale, n, bias, y, yStride);
}

}  // namespace

// quantizeRowInt8Act with 16 lanes: the same codes, scales and sums bit for bit. The products are rounded
// on their own (mul_round cannot be fused into the subtraction), as the portable code rounds them, and
// vcvtps2dq rounds half to even under the default MXCSR, as its magic-number rounding does.
int quantizeRowInt8Act(const float* x, int64_t K, int passes, int8_t* codes, float* scales, int32_t* codeSums,
                       float crestLimit) {
  constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  const __m512 absMask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  const __m512 big = _mm512_set1_ps(FLT_MAX);
  __m512 vmax = _mm512_setzero_ps();
  __m512d sq0 = _mm512_setzero_pd(), sq1 = _mm512_setzero_pd();  // sum of squares, in double (see portable)
  __mmask16 bad = 0;
  const bool crest = passes > 1 && crestLimit > 0.0f;
  for (int64_t k = 0; k < K; k += 16) {
    const __mmask16 m = K - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (K - k)) - 1);
    const __m512 a = _mm512_and_ps(_mm512_maskz_loadu_ps(m, x + k), absMask);
    bad |= _mm512_mask_cmp_ps_mask(m, a, big, _CMP_NLE_UQ);  // NaN or infinity
    vmax = _mm512_max_ps(vmax, a);
    if (crest) {
      const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(a));
      const __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
      sq0 = _mm512_fmadd_pd(lo, lo, sq0);
      sq1 = _mm512_fmadd_pd(hi, hi, sq1);
    }
  }
  if (bad) {  // as the portable code: every output of the row NaN
    for (int64_t k = 0; k < passes * K; ++k) codes[k] = 0;
    for (int p = 0; p < passes; ++p) {
      scales[p] = __builtin_nanf("");  // not numeric_limits: no inline code shared with portable files
      codeSums[p] = 0;
    }
    return passes;
  }
  const float amax = _mm512_reduce_max_ps(vmax);
  if (crest) {
    const double a = amax;
    // The second pass where max|x| > crestLimit * rms(x) (kernels.h).
    if (!(a * a * static_cast<double>(K) > static_cast<double>(crestLimit) * crestLimit * _mm512_reduce_add_pd(_mm512_add_pd(sq0, sq1)))) passes = 1;
  }
  const float s1 = amax / 127.0f;
  const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
  const float s2 = s1 / 254.0f;
  const float id2 = s2 != 0.0f ? 1.0f / s2 : 0.0f;
  const __m512 vid = _mm512_set1_ps(id), vs1 = _mm512_set1_ps(s1), vid2 = _mm512_set1_ps(id2);
  const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
  __m512i sum1 = _mm512_setzero_si512(), sum2 = _mm512_setzero_si512();
  for (int64_t k = 0; k < K; k += 16) {
    const __mmask16 m = K - k >= 16 ? __mmask16(0xffff) : __mmask16((1u << (K - k)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + k);
    const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_round_ps(v, vid, kRound));  // masked lanes: 0
    _mm512_mask_cvtsepi32_storeu_epi8(codes + k, m, q1);
    sum1 = _mm512_add_epi32(sum1, q1);
    if (passes > 1) {
      const __m512 e = _mm512_sub_round_ps(v, _mm512_mul_round_ps(vs1, _mm512_cvtepi32_ps(q1), kRound), kRound);
      const __m512i q2 = _mm512_min_epi32(hi, _mm512_max_epi32(lo, _mm512_cvtps_epi32(_mm512_mul_round_ps(e, vid2, kRound))));
      _mm512_mask_cvtsepi32_storeu_epi8(codes + K + k, m, q2);
      sum2 = _mm512_add_epi32(sum2, q2);
    }
  }
  scales[0] = s1;
  codeSums[0] = _mm512_reduce_add_epi32(sum1);
  if (passes > 1) {
    scales[1] = s2;
    codeSums[1] = _mm512_reduce_add_epi32(sum2);
  }
  return passes;
}

void linearTileInt8Act(const Int8ActRows& x, int64_t r0, int64_t r1, const int8_t* w, const float* wScale, int64_t n0,
                       int64_t n1, const float* bias, float* y, int64_t yStride) {
  if (x.index) {
    tile<1, true>(x, r0, r1, w, wScale, n0, n1, bias, y, yStride);
  } else if (x.passes == 2) {
    tile<2, false>(x, r0, r1, w, wScale, n0, n1, bias, y, yStride);
  } else {
    tile<1, false>(x, r0, r1, w, wScale, n0, n1, bias, y, yStride);
  }
}

}  // namespace avx512bf16
}  // namespace kiln
