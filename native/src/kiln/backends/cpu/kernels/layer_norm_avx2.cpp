// AVX2 body of layerNormKernel. See avx2.h for why everything here has internal linkage.
#include <immintrin.h>
#include <math.h>

#include <cstring>

#include "kiln/backends/cpu/kernels/avx2.h"
#include "kiln/backends/cpu/kernels/avx2_math.h"

namespace kiln {
namespace avx2 {

void layerNormRows(const float* x, int64_t xStride, int64_t r0, int64_t r1, const void* w, DType wdt,
                   const float* bias, int64_t H, float eps, float* y, int64_t yStride) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * xStride;
    float* yr = y + r * yStride;
    // Pass 1: the mean, over 16 partial sums.
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= H; i += 16) {
      a0 = _mm256_add_ps(a0, _mm256_loadu_ps(xr + i));
      a1 = _mm256_add_ps(a1, _mm256_loadu_ps(xr + i + 8));
    }
    for (; i + 8 <= H; i += 8) a0 = _mm256_add_ps(a0, _mm256_loadu_ps(xr + i));
    float sum = hsum(_mm256_add_ps(a0, a1));
    for (; i < H; ++i) sum += xr[i];
    const float mean = sum / static_cast<float>(H);
    // Pass 2: the centred sum of squares (no cancellation when |mean| >> std).
    const __m256 vmean = _mm256_set1_ps(mean);
    a0 = _mm256_setzero_ps();
    a1 = _mm256_setzero_ps();
    i = 0;
    for (; i + 16 <= H; i += 16) {
      const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(xr + i), vmean);
      const __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(xr + i + 8), vmean);
      a0 = _mm256_fmadd_ps(d0, d0, a0);
      a1 = _mm256_fmadd_ps(d1, d1, a1);
    }
    for (; i + 8 <= H; i += 8) {
      const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(xr + i), vmean);
      a0 = _mm256_fmadd_ps(d0, d0, a0);
    }
    float sq = hsum(_mm256_add_ps(a0, a1));
    for (; i < H; ++i) sq += (xr[i] - mean) * (xr[i] - mean);
    const float inv = 1.0f / sqrtf(sq / static_cast<float>(H) + eps);
    const __m256 vinv = _mm256_set1_ps(inv);
    i = 0;
    for (; i + 8 <= H; i += 8) {
      __m256 n = _mm256_mul_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + i), vmean), vinv), weight8(w, wdt, i));
      if (bias) n = _mm256_add_ps(n, _mm256_loadu_ps(bias + i));
      _mm256_storeu_ps(yr + i, n);
    }
    for (; i < H; ++i) {
      const float n = (xr[i] - mean) * inv * weightAt(w, wdt, i);
      yr[i] = bias ? n + bias[i] : n;
    }
  }
}

}  // namespace avx2
}  // namespace kiln
