// AVX-512 prefill attention: several tokens of one sequence at once. attention_avx2.cpp's attendGroup takes
// one token's query heads at a time; in a prefill that is latency-bound (per head and run of 16 keys: 16
// short dot products, a reduction tree, a max, an exp, a sum, each waiting on the last) and a 16-wide
// port of it was no faster. Here up to 16 query vectors (the G heads of 16 / G consecutive tokens that
// share a KV head) are scored against 16 keys at a time as a small outer-product GEMM: the keys are
// transposed to [D][16] once per chunk and each step is one load and 16 independent broadcast-FMAs, a
// query's 16 scores ending in one register, where the online softmax works on them whole. Masks keep
// each token to its own causal / sliding window. The weighted sum of V rows is attendGroup's, widened.
// See avx512.h for why everything here has internal linkage.
#include <immintrin.h>
#include <math.h>

#include <algorithm>

#include "kiln/backends/cpu/kernels/avx2.h"
#include "kiln/backends/cpu/kernels/avx512.h"
#include "kiln/backends/cpu/kernels/transpose_avx512.h"

namespace kiln {
namespace avx512 {

namespace {

inline __mmask16 tailMask(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1);
}

// e^x for 16 floats, attention_avx2.cpp's exp8 (Cephes' expf) lane for lane.
inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(x, _mm512_set1_ps(88.75f));
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.33654f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i pow2n = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(pow2n));
}

// acc[0..D) += sum over j < n of p[j] * v_j, row j at v + j * rowStride.
void accumulateRun(const float* p, const float* v, int64_t rowStride, int64_t n, int64_t D, float* acc) {
  int64_t d = 0;
  // 64 output features in registers, two sets of accumulators (even and odd rows) to hide FMA latency.
  for (; d + 64 <= D; d += 64) {
    __m512 e[4], o[4];
    for (int i = 0; i < 4; ++i) {
      e[i] = _mm512_loadu_ps(acc + d + 16 * i);
      o[i] = _mm512_setzero_ps();
    }
    int64_t j = 0;
    for (; j + 2 <= n; j += 2) {
      const float* va = v + j * rowStride + d;
      const float* vb = va + rowStride;
      const __m512 pa = _mm512_set1_ps(p[j]), pb = _mm512_set1_ps(p[j + 1]);
      for (int i = 0; i < 4; ++i) {
        e[i] = _mm512_fmadd_ps(pa, _mm512_loadu_ps(va + 16 * i), e[i]);
        o[i] = _mm512_fmadd_ps(pb, _mm512_loadu_ps(vb + 16 * i), o[i]);
      }
    }
    if (j < n) {
      const float* va = v + j * rowStride + d;
      const __m512 pa = _mm512_set1_ps(p[j]);
      for (int i = 0; i < 4; ++i) e[i] = _mm512_fmadd_ps(pa, _mm512_loadu_ps(va + 16 * i), e[i]);
    }
    for (int i = 0; i < 4; ++i) _mm512_storeu_ps(acc + d + 16 * i, _mm512_add_ps(e[i], o[i]));
  }
  for (; d < D; d += 16) {
    const __mmask16 m = tailMask(D - d);
    __m512 e = _mm512_maskz_loadu_ps(m, acc + d), o = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 2 <= n; j += 2) {
      e = _mm512_fmadd_ps(_mm512_set1_ps(p[j]), _mm512_maskz_loadu_ps(m, v + j * rowStride + d), e);
      o = _mm512_fmadd_ps(_mm512_set1_ps(p[j + 1]), _mm512_maskz_loadu_ps(m, v + (j + 1) * rowStride + d), o);
    }
    if (j < n) e = _mm512_fmadd_ps(_mm512_set1_ps(p[j]), _mm512_maskz_loadu_ps(m, v + j * rowStride + d), e);
    _mm512_mask_storeu_ps(acc + d, m, _mm512_add_ps(e, o));
  }
}

// dst[d * 16 + j] = rows[j][d] for j < n (rows at rowStride), 0 for n <= j < 16; d < D.
void transposeKeys(const float* rows, int64_t rowStride, int64_t n, int64_t D, float* dst) {
  for (int64_t d0 = 0; d0 < D; d0 += 16) {
    const __mmask16 m = tailMask(D - d0);
    __m512i r[16];
    for (int j = 0; j < 16; ++j) {
      r[j] = j < n ? _mm512_castps_si512(_mm512_maskz_loadu_ps(m, rows + j * rowStride + d0)) : _mm512_setzero_si512();
    }
    transpose16x16(r);
    for (int64_t d = 0; d < 16 && d0 + d < D; ++d) _mm512_storeu_si512(dst + (d0 + d) * 16, r[d]);
  }
}

// S[i] (16 keys) = sum_d qt[d][i] * kt[d][0..16) for query vectors i < NQ (queries transposed to [D][16],
// so every broadcast is at a fixed offset from one pointer).
template <int NQ>
inline void scoreTile(const float* qt, const float* kt, int64_t D, __m512* S) {
  __m512 acc[NQ];
#pragma GCC unroll 16
  for (int i = 0; i < NQ; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t d = 0; d < D; ++d) {
    const __m512 kv = _mm512_loadu_ps(kt + d * 16);
#pragma GCC unroll 16
    for (int i = 0; i < NQ; ++i) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(qt[d * 16 + i]), kv, acc[i]);
  }
#pragma GCC unroll 16
  for (int i = 0; i < NQ; ++i) S[i] = acc[i];
}

void scoreTileAny(int nq, const float* qt, const float* kt, int64_t D, __m512* S) {
  if (nq > 8) {
    scoreTile<16>(qt, kt, D, S);  // the unused queries are zero
  } else if (nq > 4) {
    scoreTile<8>(qt, kt, D, S);
  } else if (nq > 2) {
    scoreTile<4>(qt, kt, D, S);
  } else {
    scoreTile<2>(qt, kt, D, S);
  }
}

}  // namespace

void attendTile(const AttentionTileArgs& a, float* scratch) {
  const int64_t G = a.group;
  const int64_t D = a.headDim;
  const int nq = static_cast<int>(a.numTokens * G);  // <= 16
  // scratch: keys transposed [D][16], queries transposed [D][16], then per query: running max, running
  // sum, and 16 weights.
  float* kt = scratch;
  float* qt = kt + D * 16;
  float* runMax = qt + D * 16;
  float* runSum = runMax + 16;
  float* p = runSum + 16;
  const float* qs[16];
  float* os[16];
  int64_t lo = a.lo[0], hi = a.hi[0];
  for (int64_t t = 0; t < a.numTokens; ++t) {
    lo = std::min(lo, a.lo[t]);
    hi = std::max(hi, a.hi[t]);
    for (int64_t g = 0; g < G; ++g) {
      qs[t * G + g] = a.q[t] + g * D;
      os[t * G + g] = a.out[t] + g * D;
      float* o = a.out[t] + g * D;
      for (int64_t d = 0; d < D; ++d) o[d] = 0.0f;
    }
  }
  for (int64_t d = 0; d < D; ++d) {
    for (int i = 0; i < 16; ++i) qt[d * 16 + i] = i < nq ? qs[i][d] : 0.0f;
  }
  for (int i = 0; i < nq; ++i) {
    runMax[i] = -INFINITY;
    runSum[i] = 0.0f;
  }
  const __m512 vscale = _mm512_set1_ps(a.scale);
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512 S[16];
  for (int64_t p0 = lo; p0 <= hi;) {
    const int64_t slot = p0 % a.tokensPerBlock;
    const int64_t left = a.tokensPerBlock - slot, need = hi - p0 + 1;
    const int64_t n = std::min<int64_t>(16, left < need ? left : need);
    const float* blockBase = a.pool + static_cast<int64_t>(a.blockTable[p0 / a.tokensPerBlock]) * a.blockPitch;
    const float* kRows = blockBase + a.kOffset + slot * a.rowStride;
    const float* vRows = blockBase + a.vOffset + slot * a.rowStride;
    transposeKeys(kRows, a.rowStride, n, D, kt);
    scoreTileAny(nq, qt, kt, D, S);
    const __m512i pos = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(p0)), lane);
    for (int i = 0; i < nq; ++i) {
      const int64_t t = i / G;
      const int64_t g = i % G;
      // Keys this token may see: j < n and lo_t <= p0 + j <= hi_t.
      const __mmask16 valid = tailMask(n) & _mm512_cmpge_epi32_mask(pos, _mm512_set1_epi32(static_cast<int32_t>(a.lo[t]))) &
                              _mm512_cmple_epi32_mask(pos, _mm512_set1_epi32(static_cast<int32_t>(a.hi[t])));
      if (valid == 0) continue;
      // s = scale * q.k, then the softcap, then the ALiBi bias (kernels.h's order).
      __m512 s = _mm512_mul_ps(vscale, S[i]);
      if (a.softcap > 0.0f || a.alibiSlopes) {
        alignas(64) float sv[16];
        _mm512_store_ps(sv, s);
        for (int64_t j = 0; j < n; ++j) {
          if (a.softcap > 0.0f) sv[j] = a.softcap * tanhf(sv[j] / a.softcap);
          if (a.alibiSlopes) sv[j] += a.alibiSlopes[g] * static_cast<float>(p0 + j);
        }
        s = _mm512_load_ps(sv);
      }
      const float m = _mm512_mask_reduce_max_ps(valid, s);
      const float newMax = m > runMax[i] ? m : runMax[i];
      float* o = os[i];
      if (newMax > runMax[i] && runSum[i] > 0.0f) {
        const float c = expf(runMax[i] - newMax);
        runSum[i] *= c;
        const __m512 vc = _mm512_set1_ps(c);
        for (int64_t d = 0; d < D; d += 16) {
          const __mmask16 dm = tailMask(D - d);
          _mm512_mask_storeu_ps(o + d, dm, _mm512_mul_ps(vc, _mm512_maskz_loadu_ps(dm, o + d)));
        }
      }
      runMax[i] = newMax;
      const __m512 e = _mm512_maskz_mov_ps(valid, exp16(_mm512_sub_ps(s, _mm512_set1_ps(newMax))));
      runSum[i] += _mm512_reduce_add_ps(e);
      _mm512_storeu_ps(p, e);
      accumulateRun(p, vRows, a.rowStride, n, D, o);
    }
    p0 += n;
  }
  for (int i = 0; i < nq; ++i) {
    const float inv = 1.0f / runSum[i];
    float* o = os[i];
    for (int64_t d = 0; d < D; ++d) o[d] *= inv;
  }
}

}  // namespace avx512
}  // namespace kiln
