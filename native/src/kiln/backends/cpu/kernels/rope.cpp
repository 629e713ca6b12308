// Rotary position embedding. Portable only: the cos/sin of each (token, frequency) pair dominate and are
// computed once per token for all heads.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kiln/backends/cpu/kernels/kernels.h"
#include "kiln/backends/cpu/kernels/portable.h"

namespace kiln {

namespace {
}

void ropeKernel(const KernelEnv& env, const float* x, int64_t numTokens, int64_t xStride, const int32_t* positions,
                int64_t numHeads, int64_t headDim, int64_t rotaryDim, bool interleaved, const float* invFreq,
                float attentionScaling, float* y, int64_t yStride, float llamaCppThetaBase) {
  if (numTokens <= 0 || numHeads <= 0 || headDim <= 0) return;
  const int64_t half = rotaryDim / 2;
  // llama.cpp's angles accumulate the float32 rounding of each product (ggml_rope_cache_init); an
  // engine that runs a GGUF file's weights as llama.cpp does (decision 0016) uses the same angles, since
  // the float16 rounding of q and k after the rotation turns even ulp differences into different values.
  const float thetaScale =
      llamaCppThetaBase > 0.0f ? std::pow(llamaCppThetaBase, -2.0f / static_cast<float>(rotaryDim)) : 0.0f;
  auto body = [&](int64_t t0, int64_t t1) {
    thread_local std::vector<float> cosBuf, sinBuf;
    if (static_cast<int64_t>(cosBuf.size()) < half) {
      cosBuf.resize(static_cast<size_t>(half));
      sinBuf.resize(static_cast<size_t>(half));
    }
    for (int64_t t = t0; t < t1; ++t) {
      // As transformers: the angle is the float32 product position * inv_freq; cos and sin of that float
      // are rounded to float32, then multiplied (in float32) by attention_scaling.
      const float pos = static_cast<float>(positions[t]);
      if (thetaScale > 0.0f) {
        float theta = pos;
        for (int64_t i = 0; i < half; ++i, theta *= thetaScale) {
          cosBuf[i] = std::cos(theta) * attentionScaling;
          sinBuf[i] = std::sin(theta) * attentionScaling;
        }
      }
      for (int64_t i = 0; thetaScale == 0.0f && i < half; ++i) {
        const float angle = pos * invFreq[i];
        cosBuf[i] = static_cast<float>(std::cos(static_cast<double>(angle))) * attentionScaling;
        sinBuf[i] = static_cast<float>(std::sin(static_cast<double>(angle))) * attentionScaling;
      }
      for (int64_t h = 0; h < numHeads; ++h) {
        const float* xh = x + t * xStride + h * headDim;
        float* yh = y + t * yStride + h * headDim;
        // Both members of a pair are read before either is written, so y may alias x.
        for (int64_t i = 0; i < half; ++i) {
          const int64_t i1 = interleaved ? 2 * i : i;
          const int64_t i2 = interleaved ? 2 * i + 1 : i + half;
          const float a = xh[i1], b = xh[i2];
          yh[i1] = a * cosBuf[i] - b * sinBuf[i];
          yh[i2] = b * cosBuf[i] + a * sinBuf[i];
        }
        if (yh != xh) {
          for (int64_t d = 2 * half; d < headDim; ++d) yh[d] = xh[d];
        }
      }
    }
  };
  const int64_t perToken = numHeads * headDim;
  portable::parallelItems(env, numTokens, perToken, body, int64_t{1} << 14);
}

}  // namespace kiln
