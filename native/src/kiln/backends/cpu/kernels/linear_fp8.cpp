// FP8 e4m3 linears on the CPU (decision 0015): the reference semantics of the format (kiln/fp8.h), which
// the cuda kernels (backends/cuda/kernels/fp8.cu) reproduce to float32 summation order. Scalar and plain:
// it exists so a cpu fp8 engine of a checkpoint is what a cuda fp8 engine is checked against, and so CI
// covers the format without a GPU. Each row of x is quantized with its own scale, the weight rows are
// decoded through a table, and each finished float32 sum is scaled once.
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "kiln/backends/cpu/kernels/kernels.h"
#include "kiln/backends/cpu/kernels/portable.h"
#include "kiln/fp8.h"

namespace kiln {

namespace {

const std::array<float, 256>& e4m3Table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[static_cast<size_t>(c)] = e4m3ToF32(static_cast<uint8_t>(c));
    return t;
  }();
  return table;
}

// Below about this many multiply-adds per parallel chunk, waking threads costs more than it saves.
constexpr int64_t kMinWorkPerChunk = 1 << 17;

}  // namespace

void linearFp8Kernel(const KernelEnv& env, const float* x, int64_t rows, int64_t xStride, const void* w, int64_t N,
                     int64_t K, const float* bias, float* y, int64_t yStride) {
  if (rows <= 0 || N <= 0) return;
  const std::array<float, 256>& table = e4m3Table();
  const uint8_t* codes = static_cast<const uint8_t*>(w);
  float wScale;  // after the N * K codes, so possibly unaligned
  std::memcpy(&wScale, codes + N * K, sizeof wScale);

  // The rows' e4m3 values (as float32, exact) and each row's output scale aScale_r * wScale.
  thread_local std::vector<float> xq, outScale;
  xq.resize(static_cast<size_t>(rows * K));
  outScale.resize(static_cast<size_t>(rows));
  float* xqp = xq.data();
  float* outScalep = outScale.data();
  portable::forEachRow(env, rows, K, [&](int64_t r) {
    const float* xr = x + r * xStride;
    float amax = 0.0f;
    for (int64_t k = 0; k < K; ++k) amax = std::fmax(amax, std::fabs(xr[k]));
    const float inv = fp8InverseScaleOf(amax);
    outScalep[r] = fp8ScaleOf(amax) * wScale;
    for (int64_t k = 0; k < K; ++k) xqp[r * K + k] = table[f32ToE4m3(xr[k] * inv)];
  });

  auto body = [&](int64_t n0, int64_t n1) {
    thread_local std::vector<float> wrow;
    wrow.resize(static_cast<size_t>(K));
    for (int64_t n = n0; n < n1; ++n) {
      const uint8_t* c = codes + n * K;
      for (int64_t k = 0; k < K; ++k) wrow[static_cast<size_t>(k)] = table[c[k]];
      const float b = bias ? bias[n] : 0.0f;
      for (int64_t r = 0; r < rows; ++r) {
        y[r * yStride + n] = std::fma(portable::dot(xqp + r * K, wrow.data(), K), outScalep[r], b);
      }
    }
  };
  portable::parallelItems(env, N, rows * K, body, kMinWorkPerChunk);
}

}  // namespace kiln
