// AVX512_BF16 multi-row GEMM for bfloat16 weights (prefill and wide batches), linearKernel's path when x
// has many rows. The one-row tile of linear_avx512_bf16.cpp takes dot products along K (each weight row
// against each x row, summed across lanes at the end), which makes every step load a weight vector and an
// x vector for few vdpbf16ps. Here the accumulators are outer-product tiles instead, as BLIS and oneDNN
// lay them out:
//   - a panel of 64 output features x kKc inputs of w is repacked (per call, into a thread-local buffer)
//     so that one 64-byte line holds the bfloat16 pair (k, k+1) of 16 consecutive features, the operand
//     order vdpbf16ps wants: the engine's memory-mapped weights are never copied whole, and the packing
//     (one read of w per call) is amortised over every row of x;
//   - each step broadcasts one (k, k+1) pair of x from its row (vdpbf16ps' embedded {1to16} broadcast)
//     and multiplies it into 4 zmm of packed weights: kRows x 4 accumulators of 16 features each, 24 of
//     the 32 zmm registers, so one step is 4 vector loads + 6 broadcasts for 24 vdpbf16ps (768 MACs);
//   - kKc inputs per panel keep the packed panel (64 x kKc bfloat16) in L1 while all rows of x pass over
//     it; partial sums go through y between K blocks (a few loads per thousand multiply-adds).
// Accumulators hold 16 consecutive features of one row, so results are stored straight into y.
// See avx512.h for why everything here has internal linkage.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kiln/backends/cpu/kernels/avx512.h"
#include "kiln/backends/cpu/kernels/transpose_avx512.h"

namespace kiln {
namespace avx512bf16 {

namespace {

constexpr int64_t kPanel = kGemmBf16Panel;  // output features per packed panel: 4 zmm of 16 float32 sums
constexpr int kRows = 6;        // rows of x per micro-tile: 6 x 4 accumulators
constexpr int64_t kKc = 256;    // inputs (k) per packed panel: 64 x 256 bfloat16 = 32 KiB, in L1

typedef int32_t __attribute__((may_alias)) PairBits;  // a bfloat16 pair read as one 32-bit lane

// Packs features [n0, n0 + nValid) (nValid <= kPanel) x pairs [p0, p0 + np) of w [N, K] into dst[p][j]
// (kPanel pairs per p). Features past nValid are zero, so their sums are 0 (and never stored). With K odd
// the last pair is (w[K - 1], 0): it meets x's zero padding (linearKernel pads xb rows to an even length).
void packPanel(const uint16_t* w, int64_t K, int64_t n0, int64_t nValid, int64_t p0, int64_t np, uint32_t* dst) {
  const int64_t fullPairs = K / 2;  // pairs with both elements inside the row
  const int64_t pEnd = p0 + np;
  for (int64_t j0 = 0; j0 < kPanel; j0 += 16) {
    int64_t p = p0;
    for (; p + 16 <= std::min(pEnd, fullPairs); p += 16) {
      __m512i r[16];
      for (int i = 0; i < 16; ++i) {
        r[i] = j0 + i < nValid ? _mm512_loadu_si512(w + (n0 + j0 + i) * K + 2 * p) : _mm512_setzero_si512();
      }
      transpose16x16(r);
      for (int i = 0; i < 16; ++i) _mm512_storeu_si512(dst + (p - p0 + i) * kPanel + j0, r[i]);
    }
    for (; p < pEnd; ++p) {
      for (int64_t j = j0; j < j0 + 16; ++j) {
        uint32_t bits = 0;
        if (j < nValid) {
          const uint16_t* row = w + (n0 + j) * K;
          if (p < fullPairs) {
            std::memcpy(&bits, row + 2 * p, 4);
          } else if (2 * p < K) {
            bits = row[K - 1];
          }
        }
        dst[(p - p0) * kPanel + j] = bits;
      }
    }
  }
}

// y[r0 .. r0 + RT) x [n0, n0 + nValid) (+)= x . panel over np pairs: `first` starts from the bias (or 0),
// otherwise from y's partial sums.
template <int RT>
inline void microTile(const uint16_t* xb, int64_t xStride, int64_t r0, int64_t p0, int64_t np, const uint32_t* panel,
                      int64_t n0, int64_t nValid, bool first, const float* bias, float* y, int64_t yStride) {
  __mmask16 m[4];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    const int64_t v = nValid - 16 * j;
    m[j] = v >= 16 ? 0xffff : v <= 0 ? 0 : static_cast<__mmask16>((1u << v) - 1);
  }
  // Every loop over i and j is unrolled, so acc lives in registers.
  __m512 acc[RT][4];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    const __m512 b = (first && bias) ? _mm512_maskz_loadu_ps(m[j], bias + n0 + 16 * j) : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int i = 0; i < RT; ++i) {
      acc[i][j] = first ? b : _mm512_maskz_loadu_ps(m[j], y + (r0 + i) * yStride + n0 + 16 * j);
    }
  }
  const PairBits* xr[RT];
#pragma GCC unroll 8
  for (int i = 0; i < RT; ++i) xr[i] = reinterpret_cast<const PairBits*>(xb + (r0 + i) * xStride) + p0;
  for (int64_t p = 0; p < np; ++p) {
    const uint32_t* bp = panel + p * kPanel;
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(bp + 16);
    const __m512bh b2 = (__m512bh)_mm512_loadu_si512(bp + 32);
    const __m512bh b3 = (__m512bh)_mm512_loadu_si512(bp + 48);
#pragma GCC unroll 8
    for (int i = 0; i < RT; ++i) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(xr[i][p]);
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], b0, a);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], b1, a);
      acc[i][2] = _mm512_dpbf16_ps(acc[i][2], b2, a);
      acc[i][3] = _mm512_dpbf16_ps(acc[i][3], b3, a);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < RT; ++i) {
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) _mm512_mask_storeu_ps(y + (r0 + i) * yStride + n0 + 16 * j, m[j], acc[i][j]);
  }
}

}  // namespace

void roundRowBf16(const float* x, int64_t K, uint16_t* out) {
  // Integer rounding to nearest even, lane by lane as roundToBf16Bits in linear.cpp (vcvtneps2bf16 would
  // flush denormals to zero, so it is not used): bits + 0x7fff + lsb, then the high half; NaN stays a
  // quiet NaN.
  const __m512i bias = _mm512_set1_epi32(0x7fff);
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i absMask = _mm512_set1_epi32(0x7fffffff);
  const __m512i inf = _mm512_set1_epi32(0x7f800000);
  const __m512i quiet = _mm512_set1_epi32(0x40);
  for (int64_t k = 0; k < K; k += 16) {
    const __mmask16 m = K - k >= 16 ? 0xffff : static_cast<__mmask16>((1u << (K - k)) - 1);
    const __m512i bits = _mm512_maskz_loadu_epi32(m, x + k);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), one);
    __m512i h = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(bias, lsb)), 16);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(bits, absMask), inf);
    h = _mm512_mask_or_epi32(h, nan, _mm512_srli_epi32(bits, 16), quiet);
    _mm256_mask_storeu_epi16(out + k, m, _mm512_cvtepi32_epi16(h));
  }
}

int64_t gemmBf16PackWords() { return kPanel * (kKc / 2); }

void linearGemmBf16(const uint16_t* xb, int64_t xStride, int64_t rows, const uint16_t* w, int64_t n0, int64_t n1,
                    int64_t K, const float* bias, float* y, int64_t yStride, uint32_t* pack) {
  const int64_t pairs = (K + 1) / 2;
  const int64_t tiles = (rows + kRows - 1) / kRows;
  for (int64_t n = n0; n < n1; n += kPanel) {
    const int64_t nValid = std::min(kPanel, n1 - n);
    for (int64_t p0 = 0; p0 < pairs; p0 += kKc / 2) {
      const int64_t np = std::min(kKc / 2, pairs - p0);
      packPanel(w, K, n, nValid, p0, np, pack);
      const bool first = p0 == 0;
      // The weights come from memory (a model does not fit in cache) through 64 row streams at once, too
      // many for the hardware prefetcher: packing stalled on them (10% of a prefill's time). While the
      // rows of x pass over this block, fetch the next block's lines into L2, a few per micro-tile.
      int64_t nextN = n, nextP = p0 + kKc / 2;
      if (nextP >= pairs) {
        nextN = n + kPanel;
        nextP = 0;
      }
      const int64_t nextRows = nextN < n1 ? std::min(kPanel, n1 - nextN) : 0;
      const int64_t lineElems = 32;  // bfloat16 per 64-byte line
      const int64_t rowLines = (2 * std::min(kKc / 2, pairs - nextP) + lineElems - 1) / lineElems + 1;
      const int64_t totalLines = nextRows * rowLines;
      const int64_t linesPerTile = (totalLines + tiles - 1) / tiles;
      int64_t line = 0;
      auto prefetchNext = [&]() {
        for (int64_t q = 0; q < linesPerTile && line < totalLines; ++q, ++line) {
          const int64_t j = line / rowLines;
          const int64_t k = std::min(K - 1, 2 * nextP + (line % rowLines) * lineElems);
          _mm_prefetch(reinterpret_cast<const char*>(w + (nextN + j) * K + k), _MM_HINT_T0);
        }
      };
      int64_t r = 0;
      for (; r + kRows <= rows; r += kRows) {
        prefetchNext();
        microTile<kRows>(xb, xStride, r, p0, np, pack, n, nValid, first, bias, y, yStride);
      }
      prefetchNext();
      switch (rows - r) {
        case 5: microTile<5>(xb, xStride, r, p0, np, pack, n, nValid, first, bias, y, yStride); break;
        case 4: microTile<4>(xb, xStride, r, p0, np, pack, n, nValid, first, bias, y, yStride); break;
        case 3: microTile<3>(xb, xStride, r, p0, np, pack, n, nValid, first, bias, y, yStride); break;
        case 2: microTile<2>(xb, xStride, r, p0, np, pack, n, nValid, first, bias, y, yStride); break;
        case 1: microTile<1>(xb, xStride, r, p0, np, pack, n, nValid, first, bias, y, yStride); break;
        default: break;
      }
    }
  }
}

}  // namespace avx512bf16
}  // namespace kiln
