// AVX2 body of rmsNormKernel. See avx2.h for why everything here has internal linkage.
#include <immintrin.h>
#include <math.h>

#include <cstring>

#include "kiln/backends/cpu/kernels/avx2.h"
#include "kiln/backends/cpu/kernels/avx2_math.h"

namespace kiln {
namespace avx2 {

void rmsNormRows(const float* x, int64_t xStride, int64_t r0, int64_t r1, const void* w, DType wdt, int64_t H,
                 float eps, float weightOffset, float* y, int64_t yStride) {
  const __m256 offset = _mm256_set1_ps(weightOffset);
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * xStride;
    float* yr = y + r * yStride;
    // Two accumulators of 8 lanes: 16 partial sums of squares (all positive, so the float32 sum is
    // accurate to a few ulp).
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= H; i += 16) {
      const __m256 v0 = _mm256_loadu_ps(xr + i), v1 = _mm256_loadu_ps(xr + i + 8);
      a0 = _mm256_fmadd_ps(v0, v0, a0);
      a1 = _mm256_fmadd_ps(v1, v1, a1);
    }
    for (; i + 8 <= H; i += 8) {
      const __m256 v0 = _mm256_loadu_ps(xr + i);
      a0 = _mm256_fmadd_ps(v0, v0, a0);
    }
    float sumSq = hsum(_mm256_add_ps(a0, a1));
    for (; i < H; ++i) sumSq += xr[i] * xr[i];
    const float inv = 1.0f / sqrtf(sumSq / static_cast<float>(H) + eps);
    const __m256 vinv = _mm256_set1_ps(inv);
    i = 0;
    for (; i + 8 <= H; i += 8) {
      const __m256 scale = _mm256_add_ps(offset, weight8(w, wdt, i));
      _mm256_storeu_ps(yr + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(xr + i), vinv), scale));
    }
    for (; i < H; ++i) yr[i] = (xr[i] * inv) * (weightOffset + weightAt(w, wdt, i));
  }
}

}  // namespace avx2
}  // namespace kiln
