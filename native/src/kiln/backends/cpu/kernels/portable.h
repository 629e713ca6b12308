#pragma once
// Internal: small portable vector helpers shared by the kernels' generic paths (defined in portable.cpp).
#include <algorithm>
#include <cstdint>

#include "kiln/dtype.h"
#include "kiln/backends/cpu/kernels/kernels.h"

namespace kiln {
namespace portable {

// sum a[i] * b[i] in float32, over 8 independent partial sums (which the compiler can vectorise without
// -ffast-math, since each lane's order of additions is fixed).
float dot(const float* a, const float* b, int64_t n);
// y[i] += alpha * x[i]
void axpy(float alpha, const float* x, float* y, int64_t n);
// out[i] = float32 value of element i of a weight array of type t, for i < n.
void toF32(const void* data, DType t, int64_t n, float* out);

// Runs body(begin, end) over [0, n) items of `itemElements` elements each: on the pool, in chunks of at
// least `minChunkElements` elements, when there is one with more than a thread (waking it costs more than
// a small matrix), else on the caller.
template <typename Body>
void parallelItems(const KernelEnv& env, int64_t n, int64_t itemElements, const Body& body,
                   int64_t minChunkElements = int64_t{1} << 15) {
  if (env.pool && env.pool->size() > 1) {
    env.pool->parallelFor(n, std::max<int64_t>(1, minChunkElements / std::max<int64_t>(1, itemElements)), body);
  } else {
    body(0, n);
  }
}

// Runs rowFn(r) for each row r < rows of a [rows, cols] matrix, over the pool as parallelItems decides.
template <typename RowFn>
void forEachRow(const KernelEnv& env, int64_t rows, int64_t cols, const RowFn& rowFn) {
  if (rows <= 0 || cols <= 0) return;
  parallelItems(env, rows, cols, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) rowFn(r);
  });
}

}  // namespace portable
}  // namespace kiln
