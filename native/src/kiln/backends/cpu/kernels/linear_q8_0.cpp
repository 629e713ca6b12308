// linear over Q8_0 weights (dtype.h): llama.cpp's CPU semantics for Q8_0 and Q4_0 matrices (decision 0016).
// ggml multiplies such a matrix by first quantizing the input row to Q8_0 blocks (ggml-cpu's x86
// quantize_row_q8_0: d = max|x| / 127 stored as float16, codes round-half-even(x * 127 / max|x|)), then,
// per block, an integer dot product of the codes scaled by d_w * d_x (vec_dot_q8_0_q8_0, and
// vec_dot_q4_0_q8_0 for Q4_0, whose codes q - 8 the engine writer stores in the same blocks). Running a
// GGUF file's weights this way rather than dequantized to float is what makes Kiln give llama.cpp's
// tokens on models whose logits are nearly tied.
//
// Results do not depend on the kernel set: every set computes the same exact integer block sums, and the
// float accumulation over blocks is the same scalar sequence (sum += (d_w * d_x) * sumi, block order).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kiln/backends/cpu/kernels/avx2.h"
#include "kiln/backends/cpu/kernels/kernels.h"
#include "kiln/backends/cpu/kernels/portable.h"

namespace kiln {

namespace {

constexpr int64_t kQK = kQ8_0BlockElements;
// Output features per task: one weight row's blocks are read once per task for all its rows of x.
constexpr int64_t kFeatBlock = 16;
constexpr int64_t kMinWorkPerChunk = 1 << 17;

int32_t blockDotGeneric(const int8_t* w, const int8_t* x) {
  int32_t s = 0;
  for (int64_t j = 0; j < kQK; ++j) s += static_cast<int32_t>(w[j]) * static_cast<int32_t>(x[j]);
  return s;
}

}  // namespace

void quantizeRowQ8_0Activations(const float* x, int64_t K, int8_t* codes, float* scales) {
  for (int64_t b = 0; b < K / kQK; ++b) {
    const float* v = x + b * kQK;
    float amax = 0.0f;
    for (int64_t j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(v[j]));
    // d is stored (and multiplied) as float16; the codes use 127 / max|x| unrounded, as ggml does.
    scales[b] = f16ToF32(f32ToF16(amax / 127.0f));
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    // nearbyint under the default rounding mode: round half to even, as _mm256_round_ps(_MM_ROUND_NEAREST).
    for (int64_t j = 0; j < kQK; ++j) codes[b * kQK + j] = static_cast<int8_t>(std::nearbyint(v[j] * id));
  }
}

void linearQ8_0Kernel(const KernelEnv& env, const float* x, int64_t rows, int64_t xStride, const uint8_t* w,
                      int64_t N, int64_t K, const float* bias, float* y, int64_t yStride) {
  if (rows <= 0 || N <= 0) return;
  const int64_t blocks = K / kQK;
  // The input, quantized once per call: rows x K codes and rows x K/32 scales.
  thread_local std::vector<int8_t> xCodes;
  thread_local std::vector<float> xScales;
  if (static_cast<int64_t>(xCodes.size()) < rows * K) xCodes.resize(static_cast<size_t>(rows * K));
  if (static_cast<int64_t>(xScales.size()) < rows * blocks) xScales.resize(static_cast<size_t>(rows * blocks));
  int8_t* codes = xCodes.data();
  float* scales = xScales.data();
  portable::forEachRow(env, rows, K, [&](int64_t r) {
    quantizeRowQ8_0Activations(x + r * xStride, K, codes + r * K, scales + r * blocks);
  });
  const bool avx2 = env.isa >= Isa::Avx2;
  const int64_t featBlocks = (N + kFeatBlock - 1) / kFeatBlock;
  auto body = [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> wScales;
    thread_local std::vector<int32_t> sums;
    if (static_cast<int64_t>(wScales.size()) < blocks) wScales.resize(static_cast<size_t>(blocks));
    if (static_cast<int64_t>(sums.size()) < blocks) sums.resize(static_cast<size_t>(blocks));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n1 = std::min(N, (task + 1) * kFeatBlock);
      for (int64_t n = task * kFeatBlock; n < n1; ++n) {
        const uint8_t* row = w + n * blocks * kQ8_0BlockBytes;
        for (int64_t b = 0; b < blocks; ++b) {
          uint16_t h;
          std::memcpy(&h, row + b * kQ8_0BlockBytes, 2);
          wScales[b] = f16ToF32(h);
        }
        const float add = bias ? bias[n] : 0.0f;
        for (int64_t r = 0; r < rows; ++r) {
          const int8_t* xc = codes + r * K;
          const float* xs = scales + r * blocks;
          if (avx2) {
            avx2::q8_0BlockDots(row, xc, blocks, sums.data());
          } else {
            for (int64_t b = 0; b < blocks; ++b) {
              sums[b] = blockDotGeneric(reinterpret_cast<const int8_t*>(row + b * kQ8_0BlockBytes + 2), xc + b * kQK);
            }
          }
          float s = 0.0f;
          for (int64_t b = 0; b < blocks; ++b) s += (wScales[b] * xs[b]) * static_cast<float>(sums[b]);
          y[r * yStride + n] = s + add;
        }
      }
    }
  };
  const int64_t workPerTask = std::max<int64_t>(1, kFeatBlock * rows * K);
  if (env.pool && env.pool->size() > 1) {
    env.pool->parallelFor(featBlocks, std::max<int64_t>(1, kMinWorkPerChunk / workPerTask), body);
  } else {
    body(0, featBlocks);
  }
}

}  // namespace kiln
