// AVX2/FMA body of attentionKernel. See avx2.h for why everything here has internal linkage.
//
// One call handles one token and the `group` query heads that share a KV head. It walks the token's
// window of the paged cache one run of contiguous rows at a time (at most a block's tokensPerBlock rows)
// and for each run: scores of all its positions (8 at a time: 8 dot products in 8 FMA chains, then one
// horizontal-add tree instead of 8 separate reductions), the online softmax update (running maximum and
// sum, the accumulated output rescaled when the maximum grows), and the weighted sum of the run's V rows.
// Each K and V row is fetched once per call for all heads of the group, and there is no call per position.
#include <immintrin.h>
#include <math.h>

#include "kiln/backends/cpu/kernels/avx2.h"
#include "kiln/backends/cpu/kernels/avx2_math.h"

namespace kiln {
namespace avx2 {

namespace {

inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// q . k for one key row (any length).
inline float dotRow(const float* q, const float* k, int64_t D) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= D; i += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(k + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), _mm256_loadu_ps(k + i + 8), a1);
  }
  if (i + 8 <= D) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(k + i), a0);
    i += 8;
  }
  float s = hsum(_mm256_add_ps(a0, a1));
  for (; i < D; ++i) s += q[i] * k[i];
  return s;
}

// Raw scores q . k_j of n key rows (row j at k + j * rowStride) into s[0..n).
void scoreRun(const float* q, const float* k, int64_t rowStride, int64_t n, int64_t D, float* s) {
  int64_t j = 0;
  if (D % 8 == 0) {
    // Eight rows at a time: lane-wise partial sums in eight independent chains, then one reduction tree
    // turns the eight vectors into the vector of their eight sums.
    for (; j + 8 <= n; j += 8) {
      const float* kj = k + j * rowStride;
      __m256 a[8];
      for (int r = 0; r < 8; ++r) a[r] = _mm256_setzero_ps();
      for (int64_t c = 0; c < D; c += 8) {
        const __m256 qv = _mm256_loadu_ps(q + c);
        for (int r = 0; r < 8; ++r) a[r] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kj + r * rowStride + c), a[r]);
      }
      const __m256 t0 = _mm256_hadd_ps(a[0], a[1]);
      const __m256 t1 = _mm256_hadd_ps(a[2], a[3]);
      const __m256 t2 = _mm256_hadd_ps(a[4], a[5]);
      const __m256 t3 = _mm256_hadd_ps(a[6], a[7]);
      const __m256 u0 = _mm256_hadd_ps(t0, t1);  // rows 0-3: low-half partial sums | high-half partial sums
      const __m256 u1 = _mm256_hadd_ps(t2, t3);  // rows 4-7 likewise
      _mm256_storeu_ps(s + j, _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31)));
    }
  }
  for (; j < n; ++j) s[j] = dotRow(q, k + j * rowStride, D);
}

// acc[0..D) += sum over j < n of p[j] * v_j, row j at v + j * rowStride.
void accumulateRun(const float* p, const float* v, int64_t rowStride, int64_t n, int64_t D, float* acc) {
  int64_t d = 0;
  // 32 output features in registers, two sets of accumulators (even and odd rows) so that the FMA
  // latency is hidden with head dims as small as 32.
  for (; d + 32 <= D; d += 32) {
    __m256 e0 = _mm256_loadu_ps(acc + d), e1 = _mm256_loadu_ps(acc + d + 8);
    __m256 e2 = _mm256_loadu_ps(acc + d + 16), e3 = _mm256_loadu_ps(acc + d + 24);
    __m256 o0 = _mm256_setzero_ps(), o1 = _mm256_setzero_ps(), o2 = _mm256_setzero_ps(), o3 = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 2 <= n; j += 2) {
      const float* va = v + j * rowStride + d;
      const float* vb = va + rowStride;
      const __m256 pa = _mm256_broadcast_ss(p + j), pb = _mm256_broadcast_ss(p + j + 1);
      e0 = _mm256_fmadd_ps(pa, _mm256_loadu_ps(va), e0);
      e1 = _mm256_fmadd_ps(pa, _mm256_loadu_ps(va + 8), e1);
      e2 = _mm256_fmadd_ps(pa, _mm256_loadu_ps(va + 16), e2);
      e3 = _mm256_fmadd_ps(pa, _mm256_loadu_ps(va + 24), e3);
      o0 = _mm256_fmadd_ps(pb, _mm256_loadu_ps(vb), o0);
      o1 = _mm256_fmadd_ps(pb, _mm256_loadu_ps(vb + 8), o1);
      o2 = _mm256_fmadd_ps(pb, _mm256_loadu_ps(vb + 16), o2);
      o3 = _mm256_fmadd_ps(pb, _mm256_loadu_ps(vb + 24), o3);
    }
    if (j < n) {
      const float* va = v + j * rowStride + d;
      const __m256 pa = _mm256_broadcast_ss(p + j);
      e0 = _mm256_fmadd_ps(pa, _mm256_loadu_ps(va), e0);
      e1 = _mm256_fmadd_ps(pa, _mm256_loadu_ps(va + 8), e1);
      e2 = _mm256_fmadd_ps(pa, _mm256_loadu_ps(va + 16), e2);
      e3 = _mm256_fmadd_ps(pa, _mm256_loadu_ps(va + 24), e3);
    }
    _mm256_storeu_ps(acc + d, _mm256_add_ps(e0, o0));
    _mm256_storeu_ps(acc + d + 8, _mm256_add_ps(e1, o1));
    _mm256_storeu_ps(acc + d + 16, _mm256_add_ps(e2, o2));
    _mm256_storeu_ps(acc + d + 24, _mm256_add_ps(e3, o3));
  }
  for (; d + 8 <= D; d += 8) {
    __m256 e = _mm256_loadu_ps(acc + d), o = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 2 <= n; j += 2) {
      e = _mm256_fmadd_ps(_mm256_broadcast_ss(p + j), _mm256_loadu_ps(v + j * rowStride + d), e);
      o = _mm256_fmadd_ps(_mm256_broadcast_ss(p + j + 1), _mm256_loadu_ps(v + (j + 1) * rowStride + d), o);
    }
    if (j < n) e = _mm256_fmadd_ps(_mm256_broadcast_ss(p + j), _mm256_loadu_ps(v + j * rowStride + d), e);
    _mm256_storeu_ps(acc + d, _mm256_add_ps(e, o));
  }
  for (; d < D; ++d) {
    float a = acc[d];
    for (int64_t j = 0; j < n; ++j) a += p[j] * v[j * rowStride + d];
    acc[d] = a;
  }
}

}  // namespace

void attendGroup(const AttentionGroupArgs& a, float* scratch) {
  const int64_t G = a.group;
  const int64_t D = a.headDim;
  // scratch: running maximum [G], running sum [G], scores of one run [tokensPerBlock].
  float* runMax = scratch;
  float* runSum = scratch + G;
  float* s = scratch + 2 * G;
  for (int64_t g = 0; g < G; ++g) {
    runMax[g] = -INFINITY;
    runSum[g] = 0.0f;
    float* o = a.out + g * D;
    for (int64_t d = 0; d < D; ++d) o[d] = 0.0f;
  }
  const __m256 vscale = _mm256_set1_ps(a.scale);
  for (int64_t p0 = a.lo; p0 <= a.hi;) {
    const int64_t slot = p0 % a.tokensPerBlock;
    const int64_t left = a.tokensPerBlock - slot, need = a.hi - p0 + 1;
    const int64_t n = left < need ? left : need;
    const float* blockBase = a.pool + static_cast<int64_t>(a.blockTable[p0 / a.tokensPerBlock]) * a.blockPitch;
    const float* kRows = blockBase + a.kOffset + slot * a.rowStride;
    const float* vRows = blockBase + a.vOffset + slot * a.rowStride;
    for (int64_t g = 0; g < G; ++g) {
      scoreRun(a.q + g * D, kRows, a.rowStride, n, D, s);
      // s = scale * q.k, then the softcap, then the ALiBi bias (kernels.h's order).
      int64_t j = 0;
      for (; j + 8 <= n; j += 8) _mm256_storeu_ps(s + j, _mm256_mul_ps(vscale, _mm256_loadu_ps(s + j)));
      for (; j < n; ++j) s[j] *= a.scale;
      if (a.softcap > 0.0f) {
        for (j = 0; j < n; ++j) s[j] = a.softcap * tanhf(s[j] / a.softcap);
      }
      if (a.alibiSlopes) {
        const float slope = a.alibiSlopes[g];
        for (j = 0; j < n; ++j) s[j] += slope * static_cast<float>(p0 + j);
      }
      // Online softmax: the run's maximum joins the running one; what was accumulated under the old
      // maximum is rescaled by e^(old - new).
      __m256 vmax = _mm256_set1_ps(-INFINITY);
      for (j = 0; j + 8 <= n; j += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(s + j));
      float m = hmax(vmax);
      for (; j < n; ++j) m = m > s[j] ? m : s[j];
      const float newMax = m > runMax[g] ? m : runMax[g];
      float* o = a.out + g * D;
      if (newMax > runMax[g] && runSum[g] > 0.0f) {
        const float c = expf(runMax[g] - newMax);
        runSum[g] *= c;
        const __m256 vc = _mm256_set1_ps(c);
        int64_t d = 0;
        for (; d + 8 <= D; d += 8) _mm256_storeu_ps(o + d, _mm256_mul_ps(vc, _mm256_loadu_ps(o + d)));
        for (; d < D; ++d) o[d] *= c;
      }
      runMax[g] = newMax;
      const __m256 vm = _mm256_set1_ps(newMax);
      __m256 vsum = _mm256_setzero_ps();
      for (j = 0; j + 8 <= n; j += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm));
        _mm256_storeu_ps(s + j, e);
        vsum = _mm256_add_ps(vsum, e);
      }
      float sum = hsum(vsum);
      for (; j < n; ++j) {
        s[j] = expf(s[j] - newMax);
        sum += s[j];
      }
      runSum[g] += sum;
      accumulateRun(s, vRows, a.rowStride, n, D, o);
    }
    p0 += n;
  }
  for (int64_t g = 0; g < G; ++g) {
    const float inv = 1.0f / runSum[g];
    float* o = a.out + g * D;
    for (int64_t d = 0; d < D; ++d) o[d] *= inv;
  }
}

}  // namespace avx2
}  // namespace kiln
