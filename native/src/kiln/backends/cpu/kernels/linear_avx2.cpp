// AVX2/FMA/F16C body of linearKernel. See avx2.h for why everything here has internal linkage.
#include <immintrin.h>

#include <cstring>

#include "kiln/backends/cpu/kernels/avx2.h"
#include "kiln/backends/cpu/kernels/avx2_math.h"

namespace kiln {
namespace avx2 {

namespace {

enum WeightKind { kF32, kF16, kBF16, kI8 };

// 8 consecutive weights from element idx, widened to float32.
template <int Kind>
inline __m256 loadW8(const void* w, int64_t idx) {
  if (Kind == kF32) return _mm256_loadu_ps(static_cast<const float*>(w) + idx);
  if (Kind == kI8) {  // int8 codes, unscaled (the row's scale multiplies the finished sum)
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(static_cast<const int8_t*>(w) + idx));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
  }
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + idx));
  if (Kind == kF16) return _mm256_cvtph_ps(h);
  // bfloat16 is the top half of a float32: zero-extend to 32 bits and shift into place.
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

template <int Kind>
inline float loadW1(const void* w, int64_t idx) {
  if (Kind == kF32) return static_cast<const float*>(w)[idx];
  if (Kind == kI8) return static_cast<float>(static_cast<const int8_t*>(w)[idx]);
  const uint16_t h = static_cast<const uint16_t*>(w)[idx];
  if (Kind == kF16) return _cvtsh_ss(h);
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// RT rows of x times NT weight rows: RT * NT accumulators stay in registers (at most 12 of the 16), each
// weight vector loaded (and converted) once serves RT rows, each x vector serves NT weight rows.
template <int Kind, int RT, int NT>
inline void microTile(const float* x, int64_t xStride, int64_t r, const void* w, int64_t n, int64_t K,
                      const float* scales, const float* bias, float* y, int64_t yStride) {
  __m256 acc[RT][NT];
  for (int i = 0; i < RT; ++i)
    for (int j = 0; j < NT; ++j) acc[i][j] = _mm256_setzero_ps();
  const float* xr[RT];
  for (int i = 0; i < RT; ++i) xr[i] = x + (r + i) * xStride;
  int64_t k = 0;
  constexpr int64_t kWeightBytes = Kind == kF32 ? 4 : Kind == kI8 ? 1 : 2;
  constexpr int64_t kLineWeights = 64 / kWeightBytes;
  for (; k + 8 <= K; k += 8) {
    // One row (decode) streams 16-bit weights from memory: prefetch the next tile's rows one tile ahead, as
    // pairTileBf16 does (the hardware prefetcher stops at each row's page boundary).
    if (RT == 1 && Kind != kF32 && (k % kLineWeights) == 0) {
      for (int j = 0; j < NT; ++j) {
        _mm_prefetch(static_cast<const char*>(w) + ((n + NT + j) * K + k) * kWeightBytes, _MM_HINT_T0);
      }
    }
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
      if (Kind == kI8) s *= scales[n + j];
      if (bias) s += bias[n + j];
      y[(r + i) * yStride + n + j] = s;
    }
  }
}

template <int Kind, int RT, int NT>
inline void featureSweep(const float* x, int64_t xStride, int64_t r, const void* w, int64_t n0, int64_t n1,
                         int64_t K, const float* scales, const float* bias, float* y, int64_t yStride) {
  int64_t n = n0;
  for (; n + NT <= n1; n += NT) microTile<Kind, RT, NT>(x, xStride, r, w, n, K, scales, bias, y, yStride);
  for (; n < n1; ++n) microTile<Kind, RT, 1>(x, xStride, r, w, n, K, scales, bias, y, yStride);
}

// One row of x (decode) times NT bfloat16 weight rows. The generic path spends two shuffle-unit
// operations per 8 weights on widening (zero-extend, shift), as many as FMAs, which caps a one-row product
// at about half the FMA rate. Here 16 weights are loaded as 8 32-bit lanes of two bfloat16 each: a shift
// left by 16 yields the even-indexed weights as float32, masking off the low half the odd-indexed ones,
// one cheap operation per 8 weights. x is reordered to match once per tile: in each chunk of 16,
// the 8 even-indexed elements then the 8 odd-indexed ones (xp). Needs K % 16 == 0.
template <int NT>
inline void pairTileBf16(const float* xp, const void* w, int64_t n, int64_t K, const float* bias, float* y) {
  __m256 acc[NT];
  for (int j = 0; j < NT; ++j) acc[j] = _mm256_setzero_ps();
  const __m256i oddMask = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
  const uint16_t* wr = static_cast<const uint16_t*>(w) + n * K;
  for (int64_t k = 0; k < K; k += 16) {
    const __m256 xe = _mm256_loadu_ps(xp + k);
    const __m256 xo = _mm256_loadu_ps(xp + k + 8);
    // Decode streams every weight from memory once, NT rows (NT separate 4 KiB pages for K = 2048) at a
    // time, and the hardware prefetcher does not follow a stream across pages: fetch the same position
    // of the next tile's rows (NT * K weights ahead, a prefetch never faults) one tile in advance.
    if ((k & 31) == 0) {
      for (int j = 0; j < NT; ++j) _mm_prefetch(reinterpret_cast<const char*>(wr + (j + NT) * K + k), _MM_HINT_T0);
    }
    for (int j = 0; j < NT; ++j) {
      const __m256i pair = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr + j * K + k));
      acc[j] = _mm256_fmadd_ps(xe, _mm256_castsi256_ps(_mm256_slli_epi32(pair, 16)), acc[j]);
      acc[j] = _mm256_fmadd_ps(xo, _mm256_castsi256_ps(_mm256_and_si256(pair, oddMask)), acc[j]);
    }
  }
  for (int j = 0; j < NT; ++j) y[n + j] = hsum(acc[j]) + (bias ? bias[n + j] : 0.0f);
}

// Longest K of the one-row bfloat16 path: its reordered copy of x lives on the stack.
constexpr int64_t kPairMaxK = 8192;

// True when the one-row bfloat16 path handled the row.
bool oneRowBf16(const float* x, const void* w, int64_t n0, int64_t n1, int64_t K, const float* bias, float* y) {
  if (K % 16 != 0 || K > kPairMaxK) return false;
  alignas(32) float xp[kPairMaxK];
  for (int64_t k = 0; k < K; k += 16) {
    for (int i = 0; i < 8; ++i) {
      xp[k + i] = x[k + 2 * i];
      xp[k + 8 + i] = x[k + 2 * i + 1];
    }
  }
  int64_t n = n0;
  for (; n + 8 <= n1; n += 8) pairTileBf16<8>(xp, w, n, K, bias, y);
  for (; n < n1; ++n) pairTileBf16<1>(xp, w, n, K, bias, y);
  return true;
}

template <int Kind>
void tile(const float* x, int64_t xStride, int64_t r0, int64_t r1, const void* w, int64_t n0, int64_t n1,
          int64_t K, const float* scales, const float* bias, float* y, int64_t yStride) {
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) featureSweep<Kind, 4, 3>(x, xStride, r, w, n0, n1, K, scales, bias, y, yStride);
  switch (r1 - r) {
    case 3: featureSweep<Kind, 3, 4>(x, xStride, r, w, n0, n1, K, scales, bias, y, yStride); break;
    case 2: featureSweep<Kind, 2, 6>(x, xStride, r, w, n0, n1, K, scales, bias, y, yStride); break;
    // One row (decode): 8 weight rows in flight keep 8 independent FMA chains and stream memory.
    case 1:
      if (Kind == kBF16 && oneRowBf16(x + r * xStride, w, n0, n1, K, bias, y + r * yStride)) break;
      featureSweep<Kind, 1, 8>(x, xStride, r, w, n0, n1, K, scales, bias, y, yStride);
      break;
    default: break;
  }
}

}  // namespace

void linearTile(const float* x, int64_t xStride, int64_t r0, int64_t r1, const void* w, DType wdt, int64_t n0,
                int64_t n1, int64_t K, const float* scales, const float* bias, float* y, int64_t yStride) {
  switch (wdt) {
    case DType::F32: tile<kF32>(x, xStride, r0, r1, w, n0, n1, K, nullptr, bias, y, yStride); return;
    case DType::F16: tile<kF16>(x, xStride, r0, r1, w, n0, n1, K, nullptr, bias, y, yStride); return;
    case DType::BF16: tile<kBF16>(x, xStride, r0, r1, w, n0, n1, K, nullptr, bias, y, yStride); return;
    case DType::I8: tile<kI8>(x, xStride, r0, r1, w, n0, n1, K, scales, bias, y, yStride); return;
    case DType::I32:     // never routed here (see linearKernel)
    case DType::F8E4M3:  // linearFp8Kernel
    case DType::I4:      // linearInt4Kernel (linear_int4_avx2.cpp)
    case DType::Q8_0:    // linearQ8_0Kernel
      return;
  }
}

}  // namespace avx2
}  // namespace kiln
