#pragma once
// Internal: the AVX-512 kernel bodies. Two files per kernel family at most, by the flags they need:
//   *_avx512.cpp       -mavx512f -mavx512bw -mavx512vl -mavx512dq (+ AVX2/FMA/F16C): call when env.isa >= Isa::Avx512;
//   *_avx512_bf16.cpp  the same plus -mavx512bf16 -mavx512vnni: call when env.isa >= Isa::Avx512Bf16.
// The same linkage rule as avx2.h: no inline functions or templates shared with portable files.
#include <cstdint>

#include "kiln/dtype.h"

namespace kiln {
namespace avx512 {

// Prefill attention for up to 16 query vectors at once (attention_avx512.cpp): the `group` heads sharing
// one KV head, of numTokens tokens of one sequence (numTokens * group <= 16); token t attends to cached
// positions lo[t] .. hi[t]. The cache addressing is avx2::AttentionGroupArgs'.
struct AttentionTileArgs {
  const float* q[16];  // per token: its group's query heads back to back
  float* out[16];
  int64_t lo[16];
  int64_t hi[16];
  int64_t numTokens;
  int64_t group;
  int64_t headDim;
  const float* pool;
  const int32_t* blockTable;
  int64_t tokensPerBlock;
  int64_t blockPitch;
  int64_t kOffset;
  int64_t vOffset;
  int64_t rowStride;
  float scale;
  float softcap;              // <= 0: none
  const float* alibiSlopes;   // [group] or null
};
// scratch: at least 32 * headDim + 48 floats.
void attendTile(const AttentionTileArgs& args, float* scratch);

// One row of quantizeInt4Activations (kernels.h), 32 inputs a step.
void quantizeInt4ActivationRow(const float* x, int64_t K, int8_t* q, float* d, int32_t* c);

// y[r, n] for r in [r0, r1), n in [n0, n1) of linearKernel, float32 FMAs on weights widened to float32
// (int8 codes too, their row's scale applied to the finished sum; `scales` [N], int8 only).
void linearTile(const float* x, int64_t xStride, int64_t r0, int64_t r1, const void* w, DType wdt, int64_t n0,
                int64_t n1, int64_t K, const float* scales, const float* bias, float* y, int64_t yStride);

// linearTile's one-row case for int8 weights over a thread's whole range of features [n0, n1): the range
// is read as four sequential streams a quarter apart (as linear_int4_avx512_bf16.cpp's decodeSweep), not
// as tiles of 8 adjacent rows.
void decodeInt8(const float* x, const int8_t* w, int64_t n0, int64_t n1, int64_t K, const float* scales,
                const float* bias, float* y);

}  // namespace avx512

namespace avx512bf16 {

// avx2::linearTileInt4 with vpdpbusd (AVX512_VNNI): four blocks (128 weights) a step
// (linear_int4_avx512_bf16.cpp).
void linearTileInt4(const int8_t* xq, const float* xd, const int32_t* xc, int64_t qStride, int64_t sStride,
                    int64_t r0, int64_t r1, const uint8_t* codes, const uint16_t* bscales, int64_t bsStride,
                    int64_t n0, int64_t n1, int64_t K, const float* bias, float* y, int64_t yStride);

// The same tile for bfloat16 weights w [N, K] and activations already rounded to bfloat16, xb [rows, K]
// (row stride K, raw bfloat16 bits): vdpbf16ps multiplies 32 pairs per instruction, products exact in
// float32, sums in float32.
void linearTileBf16(const uint16_t* xb, int64_t r0, int64_t r1, const uint16_t* w, int64_t n0, int64_t n1, int64_t K,
                    const float* bias, float* y, int64_t yStride);

// linearTileBf16's one-row case over a thread's whole range of features [n0, n1), read as four sequential
// streams a quarter apart (as avx512::decodeInt8).
void decodeBf16(const uint16_t* xb, const uint16_t* w, int64_t n0, int64_t n1, int64_t K, const float* bias, float* y);

// The multi-row GEMM (linear_gemm_avx512_bf16.cpp): y[r, n] for all `rows` and n in [n0, n1), n0 a
// multiple of kGemmBf16Panel. xb [rows, xStride] bfloat16 bits with xStride even and, when K is odd,
// xb[r, K] = 0. `pack` is scratch of gemmBf16PackWords() 32-bit words (one per thread).
constexpr int64_t kGemmBf16Panel = 64;
// out[k] = x[k] rounded to bfloat16 bits (nearest even, NaN quiet), as linear.cpp's roundToBf16Bits.
void roundRowBf16(const float* x, int64_t K, uint16_t* out);
int64_t gemmBf16PackWords();
void linearGemmBf16(const uint16_t* xb, int64_t xStride, int64_t rows, const uint16_t* w, int64_t n0, int64_t n1,
                    int64_t K, const float* bias, float* y, int64_t yStride, uint32_t* pack);

}  // namespace avx512bf16
}  // namespace kiln
