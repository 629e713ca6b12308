#pragma once
// Internal: the AVX2/FMA/F16C kernel bodies (files *_avx2.cpp, compiled with -mavx2 -mfma -mf16c).
// Call them only when env.isa == Isa::Avx2. They work on one range of rows; threading and argument
// handling stay in the portable files.
//
// The *_avx2.cpp files deliberately use no inline functions or templates shared with portable files
// (std containers, std::function, kiln/dtype.h's inline helpers): the linker keeps one copy of such a
// function, and it could be the AVX2-compiled one, which would then run on CPUs without AVX2.
#include <cstdint>

#include "kiln/dtype.h"

namespace kiln {
namespace avx2 {

// y[r, n] for r in [r0, r1), n in [n0, n1) of linearInt4Kernel, from x quantized by
// quantizeInt4Activations (xq, xd, xc with row strides qStride and sStride): `codes` the int4 matrix's
// nibbles (K / 2 bytes a row), `bscales` one bfloat16 scale per 32-element block, row n's at
// bscales + (n - n0) * bsStride (vpmaddubsw; the plain AVX-512 set runs it too).
void linearTileInt4(const int8_t* xq, const float* xd, const int32_t* xc, int64_t qStride, int64_t sStride,
                    int64_t r0, int64_t r1, const uint8_t* codes, const uint16_t* bscales, int64_t bsStride,
                    int64_t n0, int64_t n1, int64_t K, const float* bias, float* y, int64_t yStride);
// One row of quantizeInt4Activations.
void quantizeInt4ActivationRow(const float* x, int64_t K, int8_t* q, float* d, int32_t* c);

// y[r, n] for r in [r0, r1), n in [n0, n1): see linearKernel. `scales` [N]: int8 weights' row scales.
void linearTile(const float* x, int64_t xStride, int64_t r0, int64_t r1, const void* w, DType wdt, int64_t n0,
                int64_t n1, int64_t K, const float* scales, const float* bias, float* y, int64_t yStride);

// sums[b] = the integer dot product of the 32 codes of Q8_0 block b of wBlocks (34 bytes each: float16 d,
// then the codes) and xCodes[32 b, 32 b + 32), for b < blocks (linear_q8_0.cpp).
void q8_0BlockDots(const uint8_t* wBlocks, const int8_t* xCodes, int64_t blocks, int32_t* sums);

// Rows [r0, r1) of rmsNormKernel.
void rmsNormRows(const float* x, int64_t xStride, int64_t r0, int64_t r1, const void* w, DType wdt, int64_t H,
                 float eps, float weightOffset, float* y, int64_t yStride);

// Rows [r0, r1) of layerNormKernel.
void layerNormRows(const float* x, int64_t xStride, int64_t r0, int64_t r1, const void* w, DType wdt,
                   const float* bias, int64_t H, float eps, float* y, int64_t yStride);

// One row each of n elements.
void addRow(const float* a, const float* b, int64_t n, float* out);
void mulRow(const float* a, const float* b, int64_t n, float* out);
void siluRow(const float* a, int64_t n, float* out);
void swigluRow(const float* gate, const float* up, int64_t n, float* out);
void geluRow(const float* a, int64_t n, bool tanh, float* out);
void gegluRow(const float* gate, const float* up, int64_t n, bool tanh, float* out);

// One token's attention for the `group` query heads that share one KV head (see attentionKernel).
// The K row of position p is pool + blockTable[p / tokensPerBlock] * blockPitch + kOffset
// + (p % tokensPerBlock) * rowStride, its V row the same with vOffset; positions lo..hi are attended.
struct AttentionGroupArgs {
  const float* q;      // [group * headDim], the group's query heads back to back
  float* out;          // [group * headDim]
  int64_t group;
  int64_t headDim;
  const float* pool;
  const int32_t* blockTable;
  int64_t tokensPerBlock;
  int64_t blockPitch;  // floats from one block to the next
  int64_t kOffset;     // from a block's start to its first K row of this layer and KV head
  int64_t vOffset;
  int64_t rowStride;   // floats from one position's row to the next within a block
  int64_t lo;
  int64_t hi;
  float scale;
  float softcap;              // <= 0: none
  const float* alibiSlopes;   // [group] (the group's heads) or null
};
// scratch: at least 2 * group + tokensPerBlock floats.
void attendGroup(const AttentionGroupArgs& args, float* scratch);

}  // namespace avx2
}  // namespace kiln
