// add, mul, silu, swiglu over [rows, cols] with row strides. Each output element depends only on the
// inputs at the same index, so out may alias a or b.
#include <algorithm>
#include <cmath>

#include "kiln/kernels/avx2.h"
#include "kiln/kernels/kernels.h"

namespace kiln {

namespace {

constexpr int64_t kMinElementsPerChunk = 1 << 15;

inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

// Runs rowFn(r) for r < rows, over the pool when the matrix is big enough to repay waking it.
template <typename RowFn>
void forEachRow(const KernelEnv& env, int64_t rows, int64_t cols, const RowFn& rowFn) {
  if (rows <= 0 || cols <= 0) return;
  auto body = [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) rowFn(r);
  };
  if (env.pool && env.pool->size() > 1) {
    env.pool->parallelFor(rows, std::max<int64_t>(1, kMinElementsPerChunk / cols), body);
  } else {
    body(0, rows);
  }
}

}  // namespace

void addKernel(const KernelEnv& env, const float* a, int64_t aStride, const float* b, int64_t bStride, int64_t rows,
               int64_t cols, float* out, int64_t outStride) {
  const bool avx = env.isa == Isa::Avx2;
  forEachRow(env, rows, cols, [&](int64_t r) {
    const float* ar = a + r * aStride;
    const float* br = b + r * bStride;
    float* o = out + r * outStride;
    if (avx) return avx2::addRow(ar, br, cols, o);
    for (int64_t i = 0; i < cols; ++i) o[i] = ar[i] + br[i];
  });
}

void mulKernel(const KernelEnv& env, const float* a, int64_t aStride, const float* b, int64_t bStride, int64_t rows,
               int64_t cols, float* out, int64_t outStride) {
  const bool avx = env.isa == Isa::Avx2;
  forEachRow(env, rows, cols, [&](int64_t r) {
    const float* ar = a + r * aStride;
    const float* br = b + r * bStride;
    float* o = out + r * outStride;
    if (avx) return avx2::mulRow(ar, br, cols, o);
    for (int64_t i = 0; i < cols; ++i) o[i] = ar[i] * br[i];
  });
}

void siluKernel(const KernelEnv& env, const float* a, int64_t aStride, int64_t rows, int64_t cols, float* out,
                int64_t outStride) {
  const bool avx = env.isa == Isa::Avx2;
  forEachRow(env, rows, cols, [&](int64_t r) {
    const float* ar = a + r * aStride;
    float* o = out + r * outStride;
    if (avx) return avx2::siluRow(ar, cols, o);
    for (int64_t i = 0; i < cols; ++i) o[i] = silu(ar[i]);
  });
}

void swigluKernel(const KernelEnv& env, const float* gate, int64_t gateStride, const float* up, int64_t upStride,
                  int64_t rows, int64_t cols, float* out, int64_t outStride) {
  const bool avx = env.isa == Isa::Avx2;
  forEachRow(env, rows, cols, [&](int64_t r) {
    const float* g = gate + r * gateStride;
    const float* u = up + r * upStride;
    float* o = out + r * outStride;
    if (avx) return avx2::swigluRow(g, u, cols, o);
    for (int64_t i = 0; i < cols; ++i) o[i] = silu(g[i]) * u[i];
  });
}

}  // namespace kiln
