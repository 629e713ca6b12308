// LayerNorm (GPT-2, NeoX, OPT, Falcon, BLOOM, GPT-J, Phi, ...): y = (x - mean) / sqrt(var + eps) * w + b.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kiln/backends/cpu/kernels/avx2.h"
#include "kiln/backends/cpu/kernels/kernels.h"
#include "kiln/backends/cpu/kernels/portable.h"

namespace kiln {

namespace {


void layerNormRowsGeneric(const float* x, int64_t xStride, int64_t r0, int64_t r1, const void* w, DType wdt,
                          const float* bias, int64_t H, float eps, float* y, int64_t yStride) {
  thread_local std::vector<float> scaleBuf;
  if (static_cast<int64_t>(scaleBuf.size()) < H) scaleBuf.resize(static_cast<size_t>(H));
  portable::toF32(w, wdt, H, scaleBuf.data());
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * xStride;
    float* yr = y + r * yStride;
    // Two passes in float64 (mean, then the centred sum of squares): no cancellation when |mean| >> std,
    // which the one-pass E[x^2] - E[x]^2 form suffers from in the residual stream of deep models.
    double sum = 0.0;
    for (int64_t i = 0; i < H; ++i) sum += xr[i];
    const double mean = sum / static_cast<double>(H);
    double sq = 0.0;
    for (int64_t i = 0; i < H; ++i) {
      const double d = xr[i] - mean;
      sq += d * d;
    }
    const float meanF = static_cast<float>(mean);
    const float inv = 1.0f / std::sqrt(static_cast<float>(sq / static_cast<double>(H)) + eps);
    // Everything of x is read before y is written, so y may alias x.
    for (int64_t i = 0; i < H; ++i) {
      const float n = (xr[i] - meanF) * inv * scaleBuf[i];
      yr[i] = bias ? n + bias[i] : n;
    }
  }
}

}  // namespace

void layerNormKernel(const KernelEnv& env, const float* x, int64_t rows, int64_t xStride, const void* w, DType wdt,
                     const float* bias, int64_t H, float eps, float* y, int64_t yStride) {
  if (rows <= 0 || H <= 0) return;
  const bool avx = env.isa >= Isa::Avx2 && wdt != DType::I32;
  auto body = [&](int64_t r0, int64_t r1) {
    if (avx) {
      avx2::layerNormRows(x, xStride, r0, r1, w, wdt, bias, H, eps, y, yStride);
    } else {
      layerNormRowsGeneric(x, xStride, r0, r1, w, wdt, bias, H, eps, y, yStride);
    }
  };
  portable::parallelItems(env, rows, H, body);
}

}  // namespace kiln
