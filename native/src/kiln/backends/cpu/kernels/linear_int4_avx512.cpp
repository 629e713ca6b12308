// AVX-512 F/BW part of linearInt4Kernel (linear_int4.cpp): the activation quantizer, 32 inputs a step.
// (The tile for this set is the AVX2 one: without VNNI a zmm vpmaddubsw tile gains little over it; the
// VNNI tile is linear_int4_avx512_bf16.cpp.) See avx512.h for why everything here has internal linkage.
#include <immintrin.h>

#include <cstring>

#include "kiln/backends/cpu/kernels/avx512.h"

namespace kiln {
namespace avx512 {

// Produces exactly the portable quantizer's codes: the same float32 max, division and product, and the
// conversion rounds half to even under the default rounding mode, as nearbyint does.
void quantizeInt4ActivationRow(const float* x, int64_t K, int8_t* q, float* d, int32_t* c) {
  const int64_t blocks = K / 32;
  const int64_t units = (blocks + 3) / 4;
  for (int64_t b = 0; b < blocks; ++b) {
    const __m512 v0 = _mm512_loadu_ps(x + b * 32);
    const __m512 v1 = _mm512_loadu_ps(x + b * 32 + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    const __m512 id = _mm512_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
    const __m512i i0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, id));
    const __m512i i1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, id));
    int8_t* unit = q + (b / 4) * 128 + (b % 4) * 16;
    _mm_storeu_si128(reinterpret_cast<__m128i*>(unit), _mm512_cvtepi32_epi8(i0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(unit + 64), _mm512_cvtepi32_epi8(i1));
    _mm_storeu_ps(d + b * 4, _mm_set1_ps(amax / 127.0f));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(c + b * 4),
                     _mm_setr_epi32(-8 * _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1)), 0, 0, 0));
  }
  // The last unit's missing blocks are zeros: no codes, no scale, no correction.
  for (int64_t b = blocks; b < units * 4; ++b) {
    int8_t* unit = q + (b / 4) * 128 + (b % 4) * 16;
    std::memset(unit, 0, 16);
    std::memset(unit + 64, 0, 16);
    std::memset(d + b * 4, 0, 4 * sizeof(float));
    std::memset(c + b * 4, 0, 4 * sizeof(int32_t));
  }
}

}  // namespace avx512
}  // namespace kiln
