// AVX2 block dot products of linear_q8_0.cpp: the same exact integer sums as its portable loop.
#include <immintrin.h>

#include "kiln/backends/cpu/kernels/avx2.h"

namespace kiln {
namespace avx2 {

void q8_0BlockDots(const uint8_t* wBlocks, const int8_t* xCodes, int64_t blocks, int32_t* sums) {
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < blocks; ++b) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wBlocks + b * 34 + 2));
    const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xCodes + b * 32));
    // |w| (unsigned) times x with w's sign: maddubs' pairs stay within int16 (2 * 128 * 127 < 32767), as
    // in ggml's mul_sum_i8_pairs.
    const __m256i pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    const __m256i quads = _mm256_madd_epi16(pairs, ones);
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(quads), _mm256_extracti128_si256(quads, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    sums[b] = _mm_cvtsi128_si32(s);
  }
}

}  // namespace avx2
}  // namespace kiln
