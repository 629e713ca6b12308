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

// y[r, n] for r in [r0, r1), n in [n0, n1): see linearKernel.
void linearTile(const float* x, int64_t xStride, int64_t r0, int64_t r1, const void* w, DType wdt, int64_t n0,
                int64_t n1, int64_t K, const float* bias, float* y, int64_t yStride);

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

// Attention helpers: sum a[i] * b[i]; y[i] += alpha * x[i].
float dot(const float* a, const float* b, int64_t n);
void axpy(float alpha, const float* x, float* y, int64_t n);

}  // namespace avx2
}  // namespace kiln
