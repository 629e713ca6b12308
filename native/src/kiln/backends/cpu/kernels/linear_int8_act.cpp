// linear over int8 weights with the input quantized to int8 (decision 0017): llama.cpp's way of
// multiplying Q8_0 matrices on x86, fitted to Kiln's per-channel int8 weights. Used for multi-row calls
// (prefill chunks, batched decode), where the weight-only path is compute-bound on float32 FMAs; one row
// (decode) stays weight-only, where streaming the weights is the bound and float32 x costs nothing.
//
// Scales: one per row of x (per token), not per block of 32 as Q8_0. The weights' scale is per output
// channel, so a per-row input scale leaves y[r, n] = s_x[r] s_w[n] sum_k q_x q_w: one exact int32 sum per
// output, and the VNNI loop is nothing but vpdpbusd. Per-block scales would add a convert and a float FMA
// per accumulator every 32 k, and measured no better on the greedy checks than per-row with a second pass.
//
// Passes: 8-bit codes of a row lose its small elements next to an outlier. On the llama fixture and
// scribe-7m, one pass (Int8) agreed with the float32 engine's greedy tokens on 121/128 and 117/128
// positions (weight-only: 125 and 125; Q8_0-style blocks of 32: 122 and 122), under the 95% bar. A second
// pass quantizes each row's rounding error with s2 = s1 / 254 (|error| <= s1 / 2, so its codes fit in
// +-127): about 15 bits per element, 125 and 125 again. It doubles the integer work, as int16 activations
// with vpdpwssd would, but reuses the same u8 x s8 tile. So Auto runs two passes; one pass is there for
// those who take llama.cpp's trade (KILN_CPU_INT8_ACTIVATIONS=int8).
//
// Adaptive (KILN_CPU_INT8_ACTIVATIONS=adaptive, not the default): one pass for every row, and the second
// only for rows whose max|x| exceeds kInt8ActCrestLimit (6) times their RMS, the rows whose 8-bit codes
// lose most (the rounding error of a row's output, relative to it, grows with that crest factor). Those
// rows' residual codes run in the same task, against the same weight rows, while they are in cache.
// No one-pass scheme measured kept the greedy checks at float32's level (decision 0017), so Auto stays
// two passes.
//
// The weights are the engine's int8 codes as stored (memory-mapped or not): nothing is repacked. The
// VNNI tile takes dot products along k, like the float tiles, so it reads the row-major codes directly.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kiln/backends/cpu/kernels/kernels.h"
#include "kiln/backends/cpu/kernels/linear_int8_act.h"
#include "kiln/backends/cpu/kernels/portable.h"

namespace kiln {

namespace {

// Tiles of kFeatBlock output features x kRowBlock rows, as linear.cpp: a tile's weight rows stay in L2
// while its rows of x (1/4 of their float32 size now) pass through them.
constexpr int64_t kFeatBlock = 48;
constexpr int64_t kRowBlock = 64;
constexpr int64_t kMinWorkPerChunk = 1 << 18;  // integer multiply-adds; VNNI does 4x float32's per cycle

// Adding then subtracting 1.5 * 2^23 rounds a float32 of magnitude < 2^22 to an integer, half to even
// under the default rounding mode, as nearbyint would; unlike a nearbyint call per element, the compiler
// vectorises it with plain SSE2. (This file is compiled without FMA, so x * id is rounded on its own
// before the add, as the reference and the VNNI file's vcvtps2dq round it.)
inline float roundHalfEven(float v) {
  constexpr float kMagic = 12582912.0f;
  return (v + kMagic) - kMagic;
}

}  // namespace

bool parseInt8Activations(const char* name, Int8Activations* out) {
  if (std::strcmp(name, "auto") == 0) *out = Int8Activations::Auto;
  else if (std::strcmp(name, "float") == 0) *out = Int8Activations::Float;
  else if (std::strcmp(name, "int8") == 0) *out = Int8Activations::Int8;
  else if (std::strcmp(name, "int8x2") == 0) *out = Int8Activations::Int8x2;
  else if (std::strcmp(name, "adaptive") == 0) *out = Int8Activations::Adaptive;
  else return false;
  return true;
}

Int8Activations int8ActivationsFor(const KernelEnv& env, int64_t rows, int64_t K) {
  if (K <= 0 || K > kInt8ActMaxK) return Int8Activations::Float;
  if (env.int8Act != Int8Activations::Auto) return env.int8Act;
  return env.isa >= Isa::Avx512Bf16 && rows >= kInt8ActMinRows ? Int8Activations::Int8x2 : Int8Activations::Float;
}

int quantizeRowInt8Act(const float* x, int64_t K, int passes, int8_t* codes, float* scales, int32_t* codeSums,
                       float crestLimit) {
  float amax = 0.0f;
  double sumSq = 0.0;  // double: the choice of passes should not hang on float32 summation order
  bool finite = true;
  for (int64_t k = 0; k < K; ++k) {
    const float a = std::fabs(x[k]);
    finite = finite && a <= FLT_MAX;
    amax = std::max(amax, a);
    sumSq += static_cast<double>(a) * a;
  }
  if (!finite) {  // the float32 path would carry the NaN or infinity on: make every output of the row NaN
    std::memset(codes, 0, static_cast<size_t>(passes * K));
    for (int p = 0; p < passes; ++p) {
      scales[p] = std::numeric_limits<float>::quiet_NaN();
      codeSums[p] = 0;
    }
    return passes;
  }
  // The second pass only where max|x| > crestLimit * rms(x) (kernels.h).
  if (passes > 1 && crestLimit > 0.0f &&
      !(static_cast<double>(amax) * amax * static_cast<double>(K) > static_cast<double>(crestLimit) * crestLimit * sumSq)) {
    passes = 1;
  }
  const float s1 = amax / 127.0f;
  scales[0] = s1;
  // 127 / max|x| unrounded, as ggml's quantize_row_q8_0; |x * id| <= 127 (1 + 2^-23)^2 rounds to <= 127.
  const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
  int32_t sum = 0;
  for (int64_t k = 0; k < K; ++k) {
    const int32_t q = static_cast<int32_t>(roundHalfEven(x[k] * id));
    codes[k] = static_cast<int8_t>(q);
    sum += q;
  }
  codeSums[0] = sum;
  if (passes < 2) return 1;
  // The rounding error e = x - s1 q1 is at most s1 / 2 (plus the rounding of id): in steps of s1 / 254 its
  // codes reach +-127, clamped for that last bit.
  const float s2 = s1 / 254.0f;
  const float id2 = s2 != 0.0f ? 1.0f / s2 : 0.0f;
  scales[1] = s2;
  int8_t* codes2 = codes + K;
  sum = 0;
  for (int64_t k = 0; k < K; ++k) {
    const float e = x[k] - s1 * static_cast<float>(codes[k]);
    const float q = std::min(127.0f, std::max(-127.0f, roundHalfEven(e * id2)));
    codes2[k] = static_cast<int8_t>(q);
    sum += static_cast<int32_t>(q);
  }
  codeSums[1] = sum;
  return 2;
}

// The scalar reference of the maths (and the generic set's path): exact integer dot products, then the
// scales and the bias in float32.
void linearTileInt8ActGeneric(const Int8ActRows& x, int64_t r0, int64_t r1, const int8_t* w, const float* wScale,
                              int64_t n0, int64_t n1, const float* bias, float* y, int64_t yStride) {
  const int64_t K = x.K;
  for (int64_t i = r0; i < r1; ++i) {
    const int64_t r = x.index ? x.index[i] : i;
    for (int64_t n = n0; n < n1; ++n) {
      const int8_t* wr = w + n * K;
      float acc = 0.0f;
      for (int p = 0; p < x.passes; ++p) {
        const int64_t row = r * x.stride + x.first + p;
        const int8_t* xr = x.codes + row * K;
        int32_t s = 0;
        for (int64_t k = 0; k < K; ++k) s += static_cast<int32_t>(xr[k]) * static_cast<int32_t>(wr[k]);
        acc += static_cast<float>(s) * x.scale[row];
      }
      if (x.index) {
        y[r * yStride + n] += acc * wScale[n];
      } else {
        y[r * yStride + n] = acc * wScale[n] + (bias ? bias[n] : 0.0f);
      }
    }
  }
}

void linearInt8ActKernel(const KernelEnv& env, Int8Activations mode, const float* x, int64_t rows, int64_t xStride,
                         const void* w, int64_t N, int64_t K, const float* bias, float* y, int64_t yStride) {
  if (rows <= 0 || N <= 0) return;
  const int8_t* codes = static_cast<const int8_t*>(w);
  // The row scales follow the N * K codes (dtype.h); copy them when the codes leave them misaligned.
  const float* wScale;
  thread_local std::vector<float> scaleCopy;
  const char* after = static_cast<const char*>(w) + N * K;
  if (reinterpret_cast<uintptr_t>(after) % alignof(float) == 0) {
    wScale = reinterpret_cast<const float*>(after);
  } else {
    scaleCopy.resize(static_cast<size_t>(N));
    std::memcpy(scaleCopy.data(), after, static_cast<size_t>(N) * sizeof(float));
    wScale = scaleCopy.data();
  }
  // x quantized once per call: rows * stride * K bytes, about passes/N of the multiply-adds.
  const int stride = mode == Int8Activations::Int8 ? 1 : 2;
  const int64_t codeRows = rows * stride;
  thread_local std::vector<int8_t> xCodes;
  thread_local std::vector<float> xScale;
  thread_local std::vector<int32_t> xSum;
  thread_local std::vector<int32_t> xPasses;
  thread_local std::vector<int32_t> second;
  if (static_cast<int64_t>(xCodes.size()) < codeRows * K) xCodes.resize(static_cast<size_t>(codeRows * K));
  if (static_cast<int64_t>(xScale.size()) < codeRows) {
    xScale.resize(static_cast<size_t>(codeRows));
    xSum.resize(static_cast<size_t>(codeRows));
  }
  if (static_cast<int64_t>(xPasses.size()) < rows) xPasses.resize(static_cast<size_t>(rows));
  int8_t* qc = xCodes.data();
  float* qs = xScale.data();
  int32_t* qsum = xSum.data();
  int32_t* qpasses = xPasses.data();
  const bool vnni = env.isa >= Isa::Avx512Bf16;
  const float crestLimit = mode == Int8Activations::Adaptive ? kInt8ActCrestLimit : 0.0f;
  portable::forEachRow(env, rows, K * stride, [&](int64_t r) {
    if (vnni) {
      qpasses[r] = avx512bf16::quantizeRowInt8Act(x + r * xStride, K, stride, qc + r * stride * K, qs + r * stride,
                                                  qsum + r * stride, crestLimit);
    } else {
      qpasses[r] = quantizeRowInt8Act(x + r * xStride, K, stride, qc + r * stride * K, qs + r * stride, qsum + r * stride,
                                      crestLimit);
    }
  });
  // Adaptive: every row's first pass, then the second pass of the rows that took one (ascending, so a block
  // of rows finds its own with two binary searches), while the tile's weight rows are still in cache.
  const bool adaptive = mode == Int8Activations::Adaptive;
  int64_t seconds = 0;
  if (adaptive) {
    second.clear();
    for (int64_t r = 0; r < rows; ++r) {
      if (qpasses[r] == 2) second.push_back(static_cast<int32_t>(r));
    }
    seconds = static_cast<int64_t>(second.size());
  }
  const Int8ActRows xq{qc, qs, qsum, K, adaptive ? 1 : stride, stride, 0, nullptr};
  // (Pool threads must reach the thread_local buffers through these pointers, not by name.)
  const int32_t* secondRows = second.data();
  const Int8ActRows xq2{qc, qs, qsum, K, 1, stride, 1, secondRows};
  const int64_t featBlocks = (N + kFeatBlock - 1) / kFeatBlock;
  const int64_t rowBlocks = (rows + kRowBlock - 1) / kRowBlock;
  // Tasks are numbered feature-block-fastest, so a thread's contiguous range shares rows of x.
  auto body = [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t r0 = (task / featBlocks) * kRowBlock;
      const int64_t n0 = (task % featBlocks) * kFeatBlock;
      const int64_t r1 = std::min(rows, r0 + kRowBlock);
      const int64_t n1 = std::min(N, n0 + kFeatBlock);
      int64_t s0 = 0, s1 = 0;
      if (seconds > 0) {
        s0 = std::lower_bound(secondRows, secondRows + seconds, r0) - secondRows;
        s1 = std::lower_bound(secondRows, secondRows + seconds, r1) - secondRows;
      }
      if (vnni) {
        avx512bf16::linearTileInt8Act(xq, r0, r1, codes, wScale, n0, n1, bias, y, yStride);
        if (s1 > s0) avx512bf16::linearTileInt8Act(xq2, s0, s1, codes, wScale, n0, n1, bias, y, yStride);
      } else {
        linearTileInt8ActGeneric(xq, r0, r1, codes, wScale, n0, n1, bias, y, yStride);
        if (s1 > s0) linearTileInt8ActGeneric(xq2, s0, s1, codes, wScale, n0, n1, bias, y, yStride);
      }
    }
  };
  const int64_t tasks = featBlocks * rowBlocks;
  const int64_t workRows = adaptive ? std::min(rows, kRowBlock) + std::min(seconds, kRowBlock) : std::min(rows, kRowBlock) * stride;
  const int64_t workPerTask = std::max<int64_t>(1, kFeatBlock * workRows * K);
  if (env.pool && env.pool->size() > 1) {
    env.pool->parallelFor(tasks, std::max<int64_t>(1, kMinWorkPerChunk / workPerTask), body);
  } else {
    body(0, tasks);
  }
}

}  // namespace kiln
