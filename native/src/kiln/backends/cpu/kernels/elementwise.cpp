// add, mul, silu, swiglu over [rows, cols] with row strides. Each output element depends only on the
// inputs at the same index, so out may alias a or b.
#include <algorithm>
#include <cmath>

#include "kiln/backends/cpu/kernels/avx2.h"
#include "kiln/backends/cpu/kernels/kernels.h"
#include "kiln/backends/cpu/kernels/portable.h"

namespace kiln {

namespace {

inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

}  // namespace

void addKernel(const KernelEnv& env, const float* a, int64_t aStride, const float* b, int64_t bStride, int64_t rows,
               int64_t cols, float* out, int64_t outStride) {
  const bool avx = env.isa >= Isa::Avx2;
  portable::forEachRow(env, rows, cols, [&](int64_t r) {
    const float* ar = a + r * aStride;
    const float* br = b + r * bStride;
    float* o = out + r * outStride;
    if (avx) return avx2::addRow(ar, br, cols, o);
    for (int64_t i = 0; i < cols; ++i) o[i] = ar[i] + br[i];
  });
}

void mulKernel(const KernelEnv& env, const float* a, int64_t aStride, const float* b, int64_t bStride, int64_t rows,
               int64_t cols, float* out, int64_t outStride) {
  const bool avx = env.isa >= Isa::Avx2;
  portable::forEachRow(env, rows, cols, [&](int64_t r) {
    const float* ar = a + r * aStride;
    const float* br = b + r * bStride;
    float* o = out + r * outStride;
    if (avx) return avx2::mulRow(ar, br, cols, o);
    for (int64_t i = 0; i < cols; ++i) o[i] = ar[i] * br[i];
  });
}

void siluKernel(const KernelEnv& env, const float* a, int64_t aStride, int64_t rows, int64_t cols, float* out,
                int64_t outStride) {
  const bool avx = env.isa >= Isa::Avx2;
  portable::forEachRow(env, rows, cols, [&](int64_t r) {
    const float* ar = a + r * aStride;
    float* o = out + r * outStride;
    if (avx) return avx2::siluRow(ar, cols, o);
    for (int64_t i = 0; i < cols; ++i) o[i] = silu(ar[i]);
  });
}

void swigluKernel(const KernelEnv& env, const float* gate, int64_t gateStride, const float* up, int64_t upStride,
                  int64_t rows, int64_t cols, float* out, int64_t outStride) {
  const bool avx = env.isa >= Isa::Avx2;
  portable::forEachRow(env, rows, cols, [&](int64_t r) {
    const float* g = gate + r * gateStride;
    const float* u = up + r * upStride;
    float* o = out + r * outStride;
    if (avx) return avx2::swigluRow(g, u, cols, o);
    for (int64_t i = 0; i < cols; ++i) o[i] = silu(g[i]) * u[i];
  });
}

}  // namespace kiln
