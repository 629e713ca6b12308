// gelu, geglu, relu and softcap over [rows, cols] with row strides. Each output element depends only on
// the inputs at the same index, so out may alias an input.
#include <algorithm>
#include <cmath>

#include "kiln/backends/cpu/kernels/avx2.h"
#include "kiln/backends/cpu/kernels/kernels.h"
#include "kiln/backends/cpu/kernels/portable.h"

namespace kiln {

namespace {

// As transformers' GELUActivation (erf) and NewGELUActivation / gelu_pytorch_tanh (tanh), in float32.
inline float gelu(float x, bool tanh) {
  if (tanh) return 0.5f * x * (1.0f + std::tanh(0.7978845608028654f * (x + 0.044715f * x * x * x)));
  return 0.5f * x * (1.0f + std::erf(x * 0.7071067811865476f));
}

}  // namespace

void geluKernel(const KernelEnv& env, const float* a, int64_t aStride, int64_t rows, int64_t cols, bool tanh,
                float* out, int64_t outStride) {
  const bool avx = env.isa >= Isa::Avx2;
  portable::forEachRow(env, rows, cols, [&](int64_t r) {
    const float* ar = a + r * aStride;
    float* o = out + r * outStride;
    if (avx) return avx2::geluRow(ar, cols, tanh, o);
    for (int64_t i = 0; i < cols; ++i) o[i] = gelu(ar[i], tanh);
  });
}

void gegluKernel(const KernelEnv& env, const float* gate, int64_t gateStride, const float* up, int64_t upStride,
                 int64_t rows, int64_t cols, bool tanh, float* out, int64_t outStride) {
  const bool avx = env.isa >= Isa::Avx2;
  portable::forEachRow(env, rows, cols, [&](int64_t r) {
    const float* g = gate + r * gateStride;
    const float* u = up + r * upStride;
    float* o = out + r * outStride;
    if (avx) return avx2::gegluRow(g, u, cols, tanh, o);
    for (int64_t i = 0; i < cols; ++i) o[i] = gelu(g[i], tanh) * u[i];
  });
}

// relu and softcap: portable only (relu vectorises as written; softcap runs once, over the logits).
void reluKernel(const KernelEnv& env, const float* a, int64_t aStride, int64_t rows, int64_t cols, float* out,
                int64_t outStride) {
  portable::forEachRow(env, rows, cols, [&](int64_t r) {
    const float* ar = a + r * aStride;
    float* o = out + r * outStride;
    for (int64_t i = 0; i < cols; ++i) o[i] = ar[i] > 0.0f ? ar[i] : 0.0f;
  });
}

void softcapKernel(const KernelEnv& env, const float* a, int64_t aStride, int64_t rows, int64_t cols, float cap,
                   float* out, int64_t outStride) {
  portable::forEachRow(env, rows, cols, [&](int64_t r) {
    const float* ar = a + r * aStride;
    float* o = out + r * outStride;
    for (int64_t i = 0; i < cols; ++i) o[i] = cap * std::tanh(ar[i] / cap);
  });
}

}  // namespace kiln
