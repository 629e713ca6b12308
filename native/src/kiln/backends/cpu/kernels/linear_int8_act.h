#pragma once
// Internal: the tiles of linear_int8_act.cpp (int8 weights times activations quantized to int8), one per
// kernel set that has one. Declarations only, so the ISA-flagged files share no inline code with the
// portable ones (see avx2.h).
#include <cstdint>

namespace kiln {

// The quantized input of linearInt8ActKernel: rows * passes rows of K codes (row stride K; with two passes
// row 2r holds row r's codes and 2r + 1 those of its rounding error), and per code row its scale and the
// sum of its codes (the VNNI tile's correction for its +128 offset).
struct Int8ActRows {
  const int8_t* codes;
  const float* scale;
  const int32_t* codeSum;
  int64_t K;
  int passes;  // 1 (Int8) or 2 (Int8x2)
};

// y[r, n] = (sum over passes p of float(sum_k codes[r * passes + p, k] * w[n, k]) * scale[r * passes + p])
// * wScale[n] (+ bias[n]) for r in [r0, r1), n in [n0, n1); w is the int8 matrix's N x K codes, row-major.
void linearTileInt8ActGeneric(const Int8ActRows& x, int64_t r0, int64_t r1, const int8_t* w, const float* wScale,
                              int64_t n0, int64_t n1, const float* bias, float* y, int64_t yStride);

namespace avx512bf16 {
// The same with AVX512_VNNI's vpdpbusd (64 u8 x s8 products per instruction).
void linearTileInt8Act(const Int8ActRows& x, int64_t r0, int64_t r1, const int8_t* w, const float* wScale, int64_t n0,
                       int64_t n1, const float* bias, float* y, int64_t yStride);
// kiln::quantizeRowInt8Act (kernels.h) with AVX-512: the same codes, scales and sums.
void quantizeRowInt8Act(const float* x, int64_t K, int passes, int8_t* codes, float* scales, int32_t* codeSums);
}  // namespace avx512bf16

}  // namespace kiln
