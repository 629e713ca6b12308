#pragma once
// Internal: the tiles of linear_int8_act.cpp (int8 weights times activations quantized to int8), one per
// kernel set that has one. Declarations only, so the ISA-flagged files share no inline code with the
// portable ones (see avx2.h).
#include <cstdint>

namespace kiln {

// The quantized input of linearInt8ActKernel: `stride` code rows of K bytes per row of x (1, or 2 when
// code row 2r + 1 holds the codes of row r's rounding error), and per code row its scale and the sum of its
// codes (the VNNI tile's correction for its +128 offset). A product reads `passes` code rows of each row,
// from code row `first` of it on. With `index`, the tile's positions [r0, r1) are entries of index, which
// name the rows of x and y (Int8Auto's second pass over the rows that need it), and the products are
// added to y rather than stored (no bias).
struct Int8ActRows {
  const int8_t* codes;
  const float* scale;
  const int32_t* codeSum;
  int64_t K;
  int passes;  // code rows per row in this product: 1 or 2
  int stride;  // code rows per row in the buffers: passes, or 2 for Int8Auto
  int first;   // the first code row of a row that this product reads
  const int32_t* index;  // null: positions are rows
};

// y[row, n] (+)= (sum over p < passes of float(sum_k codes[c + p, k] * w[n, k]) * scale[c + p]) * wScale[n]
// (+ bias[n]), c = row * stride + first, row = index ? index[i] : i for i in [r0, r1), n in [n0, n1); w is
// the int8 matrix's N x K codes, row-major.
void linearTileInt8ActGeneric(const Int8ActRows& x, int64_t r0, int64_t r1, const int8_t* w, const float* wScale,
                              int64_t n0, int64_t n1, const float* bias, float* y, int64_t yStride);

namespace avx512bf16 {
// The same with AVX512_VNNI's vpdpbusd (64 u8 x s8 products per instruction).
void linearTileInt8Act(const Int8ActRows& x, int64_t r0, int64_t r1, const int8_t* w, const float* wScale, int64_t n0,
                       int64_t n1, const float* bias, float* y, int64_t yStride);
// kiln::quantizeRowInt8Act (kernels.h) with AVX-512: the same codes, scales, sums and choice of passes.
int quantizeRowInt8Act(const float* x, int64_t K, int passes, int8_t* codes, float* scales, int32_t* codeSums,
                       float crestLimit);
}  // namespace avx512bf16

}  // namespace kiln
