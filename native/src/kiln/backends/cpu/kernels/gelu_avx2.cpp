// AVX2 bodies of geluKernel and gegluKernel. See avx2.h for why everything here has internal linkage.
// erf and tanh have no AVX2 instruction; the scalar libm calls they replace dominate the portable path.
#include <immintrin.h>
#include <math.h>

#include "kiln/backends/cpu/kernels/avx2.h"
#include "kiln/backends/cpu/kernels/avx2_math.h"

namespace kiln {
namespace avx2 {

namespace {

// 1 + erf(z) for 8 floats, by Abramowitz & Stegun 7.1.26 (|error of erf| < 1.5e-7): for z >= 0,
// erf(z) = 1 - poly(t) e^(-z^2) with t = 1 / (1 + p z); erf is odd, so for z < 0, 1 + erf(z) is
// poly(t) e^(-z^2) itself, which keeps its relative accuracy in the far negative tail.
inline __m256 onePlusErf8(__m256 z) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 signMask = _mm256_set1_ps(-0.0f);
  const __m256 az = _mm256_andnot_ps(signMask, z);
  const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), az, one));
  __m256 p = _mm256_set1_ps(1.061405429f);
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453152027f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421413741f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284496736f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254829592f));
  p = _mm256_mul_ps(p, t);
  const __m256 tail = _mm256_mul_ps(p, exp8(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(az, az))));
  const __m256 negative = _mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_LT_OQ);
  // z >= 0: 2 - tail; z < 0: tail.
  return _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0f), tail), tail, negative);
}

// 1 + tanh(u) = 2 - 2 / (e^(2u) + 1) = 2 e^(2u) / (e^(2u) + 1); the second form for u < 0 keeps
// relative accuracy where 1 + tanh is small. u is clamped so e^(2u) stays finite.
inline __m256 onePlusTanh8(__m256 u) {
  u = _mm256_min_ps(_mm256_max_ps(u, _mm256_set1_ps(-40.0f)), _mm256_set1_ps(40.0f));
  const __m256 e = exp8(_mm256_add_ps(u, u));
  const __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_div_ps(_mm256_add_ps(e, e), _mm256_add_ps(e, one));
}

inline __m256 gelu8(__m256 x, bool tanh) {
  const __m256 half = _mm256_set1_ps(0.5f);
  if (tanh) {
    const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
    const __m256 u = _mm256_mul_ps(_mm256_set1_ps(0.7978845608028654f), _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), x3, x));
    return _mm256_mul_ps(_mm256_mul_ps(half, x), onePlusTanh8(u));
  }
  return _mm256_mul_ps(_mm256_mul_ps(half, x), onePlusErf8(_mm256_mul_ps(x, _mm256_set1_ps(0.7071067811865476f))));
}

inline float gelu1(float x, bool tanh) {
  if (tanh) return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
  return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
}

}  // namespace

void geluRow(const float* a, int64_t n, bool tanh, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, gelu8(_mm256_loadu_ps(a + i), tanh));
  for (; i < n; ++i) out[i] = gelu1(a[i], tanh);
}

void gegluRow(const float* gate, const float* up, int64_t n, bool tanh, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_mul_ps(gelu8(_mm256_loadu_ps(gate + i), tanh), _mm256_loadu_ps(up + i)));
  }
  for (; i < n; ++i) out[i] = gelu1(gate[i], tanh) * up[i];
}

}  // namespace avx2
}  // namespace kiln
