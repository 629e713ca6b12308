#pragma once
// Internal: small portable vector helpers shared by the kernels' generic paths (defined in portable.cpp).
#include <cstdint>

#include "kiln/dtype.h"

namespace kiln {
namespace portable {

// sum a[i] * b[i] in float32, over 8 independent partial sums (which the compiler can vectorise without
// -ffast-math, since each lane's order of additions is fixed).
float dot(const float* a, const float* b, int64_t n);
// y[i] += alpha * x[i]
void axpy(float alpha, const float* x, float* y, int64_t n);
// out[i] = float32 value of element i of a weight array of type t, for i < n.
void toF32(const void* data, DType t, int64_t n, float* out);

}  // namespace portable
}  // namespace kiln
