// AVX2/FMA/F16C body of linearKernel. See avx2.h for why everything here has internal linkage.
#include <immintrin.h>

#include <cstring>

#include "kiln/kernels/avx2.h"

namespace kiln {
namespace avx2 {

namespace {

enum WeightKind { kF32, kF16, kBF16 };

// 8 consecutive weights from element idx, widened to float32.
template <int Kind>
inline __m256 loadW8(const void* w, int64_t idx) {
  if (Kind == kF32) return _mm256_loadu_ps(static_cast<const float*>(w) + idx);
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + idx));
  if (Kind == kF16) return _mm256_cvtph_ps(h);
  // bfloat16 is the top half of a float32: zero-extend to 32 bits and shift into place.
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

template <int Kind>
inline float loadW1(const void* w, int64_t idx) {
  if (Kind == kF32) return static_cast<const float*>(w)[idx];
  const uint16_t h = static_cast<const uint16_t*>(w)[idx];
  if (Kind == kF16) return _cvtsh_ss(h);
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// RT rows of x times NT weight rows: RT * NT accumulators stay in registers (at most 12 of the 16), each
// weight vector loaded (and converted) once serves RT rows, each x vector serves NT weight rows.
template <int Kind, int RT, int NT>
inline void microTile(const float* x, int64_t xStride, int64_t r, const void* w, int64_t n, int64_t K,
                      const float* bias, float* y, int64_t yStride) {
  __m256 acc[RT][NT];
  for (int i = 0; i < RT; ++i)
    for (int j = 0; j < NT; ++j) acc[i][j] = _mm256_setzero_ps();
  const float* xr[RT];
  for (int i = 0; i < RT; ++i) xr[i] = x + (r + i) * xStride;
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 wv[NT];
    for (int j = 0; j < NT; ++j) wv[j] = loadW8<Kind>(w, (n + j) * K + k);
    for (int i = 0; i < RT; ++i) {
      const __m256 xv = _mm256_loadu_ps(xr[i] + k);
      for (int j = 0; j < NT; ++j) acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < RT; ++i) {
    for (int j = 0; j < NT; ++j) {
      float s = hsum(acc[i][j]);
      for (int64_t kk = k; kk < K; ++kk) s += xr[i][kk] * loadW1<Kind>(w, (n + j) * K + kk);
      if (bias) s += bias[n + j];
      y[(r + i) * yStride + n + j] = s;
    }
  }
}

template <int Kind, int RT, int NT>
inline void featureSweep(const float* x, int64_t xStride, int64_t r, const void* w, int64_t n0, int64_t n1,
                         int64_t K, const float* bias, float* y, int64_t yStride) {
  int64_t n = n0;
  for (; n + NT <= n1; n += NT) microTile<Kind, RT, NT>(x, xStride, r, w, n, K, bias, y, yStride);
  for (; n < n1; ++n) microTile<Kind, RT, 1>(x, xStride, r, w, n, K, bias, y, yStride);
}

template <int Kind>
void tile(const float* x, int64_t xStride, int64_t r0, int64_t r1, const void* w, int64_t n0, int64_t n1,
          int64_t K, const float* bias, float* y, int64_t yStride) {
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) featureSweep<Kind, 4, 3>(x, xStride, r, w, n0, n1, K, bias, y, yStride);
  switch (r1 - r) {
    case 3: featureSweep<Kind, 3, 4>(x, xStride, r, w, n0, n1, K, bias, y, yStride); break;
    case 2: featureSweep<Kind, 2, 6>(x, xStride, r, w, n0, n1, K, bias, y, yStride); break;
    // One row (decode): 8 weight rows in flight keep 8 independent FMA chains and stream memory.
    case 1: featureSweep<Kind, 1, 8>(x, xStride, r, w, n0, n1, K, bias, y, yStride); break;
    default: break;
  }
}

}  // namespace

void linearTile(const float* x, int64_t xStride, int64_t r0, int64_t r1, const void* w, DType wdt, int64_t n0,
                int64_t n1, int64_t K, const float* bias, float* y, int64_t yStride) {
  switch (wdt) {
    case DType::F32: tile<kF32>(x, xStride, r0, r1, w, n0, n1, K, bias, y, yStride); return;
    case DType::F16: tile<kF16>(x, xStride, r0, r1, w, n0, n1, K, bias, y, yStride); return;
    case DType::BF16: tile<kBF16>(x, xStride, r0, r1, w, n0, n1, K, bias, y, yStride); return;
    case DType::I32: return;  // never routed here (see linearKernel)
  }
}

}  // namespace avx2
}  // namespace kiln
