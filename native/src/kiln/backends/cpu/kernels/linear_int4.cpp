// int4 weight-only linears (dtype.h's layout, decision 0014), computed as llama.cpp computes Q4_0 x Q8_0:
// each row of x is quantized to int8 in blocks of 32 (the activation layout below), every block's codes
// are multiplied in integers, and each block's integer sum is scaled by its weight and activation scales.
// This file has the portable reference, the activation quantizer and the dispatch to the AVX2 tile
// (linear_int4_avx2.cpp, also used by the plain AVX-512 set: vpmaddubsw) and the AVX512_VNNI tile
// (linear_int4_avx512_bf16.cpp: vpdpbusd). Work is cut as in linear.cpp: tiles of features x rows, so
// prefill reuses each unpacked weight block for many rows and decode streams every code byte once.
//
// The maths (every set; the tests' reference, native/test/kernels.test.ts):
//   per row r and block b of 32 inputs: a = max |x[r, 32b .. 32b + 31]|, dx = a / 127, and
//   xq[r, k] = round-half-even(x[r, k] * (127 / a)) in [-127, 127] (0 when a = 0), all in float32;
//   y[r, n] = sum_b (dw[n, b] * dx[r, b]) * float(sum_{k in b} (c[n, k] - 8) * xq[r, k]) (+ bias[n]),
// c the stored nibble (code + 8) and dw the block's group scale (bfloat16). The integer sums are exact,
// so sets differ only in the float32 order of the block terms. Why: decode then reads 4.5 bits a weight
// and multiplies 64 pairs per instruction, where widening nibbles to float32 made it compute-bound (30%
// of the read bound); the activations' rounding (2^-8 of each block's largest input) is far below the
// weights' (int4: 2^-4), as llama.cpp's users have long relied on.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kiln/backends/cpu/kernels/avx2.h"
#include "kiln/backends/cpu/kernels/avx512.h"
#include "kiln/backends/cpu/kernels/kernels.h"
#include "kiln/backends/cpu/kernels/portable.h"

namespace kiln {

namespace {

constexpr int64_t kFeatBlock = 48;
constexpr int64_t kRowBlock = 64;
constexpr int64_t kMinWorkPerChunk = 1 << 17;

void quantizeRowGeneric(const float* x, int64_t K, int8_t* q, float* d, int32_t* c) {
  const Int4ActLayout L = int4ActLayout(K);
  std::memset(q, 0, static_cast<size_t>(L.codeStride));
  std::memset(d, 0, static_cast<size_t>(L.scaleStride) * sizeof(float));
  std::memset(c, 0, static_cast<size_t>(L.scaleStride) * sizeof(int32_t));
  for (int64_t b = 0; b < K / kInt4Block; ++b) {
    const float* v = x + b * kInt4Block;
    float amax = 0.0f;
    for (int64_t j = 0; j < kInt4Block; ++j) amax = std::max(amax, std::fabs(v[j]));
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    int32_t sum = 0;
    for (int64_t j = 0; j < kInt4Block; ++j) {
      // nearbyint under the default rounding mode: round half to even, as the vector conversions. A NaN
      // product (a NaN input, or any input of a block holding an infinity) gives code 0, as the vector
      // conversions' truncated 0x80000000 does, without C++'s undefined float-to-int conversion; a block
      // with an infinity has an infinite dx, so the output is NaN.
      const float r = std::nearbyint(v[j] * id);
      const int8_t code = r >= -127.0f && r <= 127.0f ? static_cast<int8_t>(r) : 0;
      q[int4ActCodeIndex(b, j)] = code;
      sum += code;
    }
    for (int t = 0; t < 4; ++t) d[b * 4 + t] = amax / 127.0f;
    c[b * 4] = -8 * sum;
  }
}

// The portable tile: blocks in order, each block term added to one float32 sum.
void tileGeneric(const int8_t* xq, const float* xd, const int32_t* xc, const Int4ActLayout& L, int64_t r0, int64_t r1,
                 const uint8_t* codes, const uint16_t* bscales, int64_t bsStride, int64_t n0, int64_t n1, int64_t K,
                 const float* bias, float* y, int64_t yStride) {
  const int64_t blocks = K / kInt4Block;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = codes + n * (K / 2);
    const uint16_t* ws = bscales + (n - n0) * bsStride;
    for (int64_t r = r0; r < r1; ++r) {
      const int8_t* q = xq + r * L.codeStride;
      float acc = 0.0f;
      for (int64_t b = 0; b < blocks; ++b) {
        int32_t sum = xc[r * L.scaleStride + b * 4];
        for (int64_t j = 0; j < kInt4Block / 2; ++j) {
          const uint8_t byte = row[b * 16 + j];
          sum += static_cast<int32_t>(byte & 15) * q[int4ActCodeIndex(b, j)];
          sum += static_cast<int32_t>(byte >> 4) * q[int4ActCodeIndex(b, j + 16)];
        }
        acc += (bf16ToF32(ws[b]) * xd[r * L.scaleStride + b * 4]) * static_cast<float>(sum);
      }
      y[r * yStride + n] = acc + (bias ? bias[n] : 0.0f);
    }
  }
}

// Row n of the matrix dequantized into `out` [K]: code times its group's scale, exact in float32.
void dequantizeRow(const uint8_t* codes, const uint16_t* scales, int64_t n, int64_t K, int64_t G, float* out) {
  const uint8_t* row = codes + n * (K / 2);
  const uint16_t* rowScales = scales + n * (K / G);
  for (int64_t b = 0; b < K; b += kInt4Block) {
    const float scale = bf16ToF32(rowScales[b / G]);
    for (int64_t j = 0; j < kInt4Block / 2; ++j) {
      const uint8_t byte = row[b / 2 + j];
      out[b + j] = static_cast<float>(static_cast<int>(byte & 15) - 8) * scale;
      out[b + j + kInt4Block / 2] = static_cast<float>(static_cast<int>(byte >> 4) - 8) * scale;
    }
  }
}

// W4A16 (floatActivations): the tile's weight rows dequantized (exactly) into float32, then the float32
// tile of the kernel set. The reference the cuda int4 engines are checked against (they keep their
// activations), not a fast path.
void tileFloat(const KernelEnv& env, const float* x, int64_t xStride, int64_t r0, int64_t r1, const uint8_t* codes,
               const uint16_t* scales, int64_t n0, int64_t n1, int64_t K, int64_t G, const float* bias, float* y,
               int64_t yStride) {
  thread_local std::vector<float> tileWeights;
  tileWeights.resize(static_cast<size_t>((n1 - n0) * K));
  for (int64_t n = n0; n < n1; ++n) dequantizeRow(codes, scales, n, K, G, tileWeights.data() + (n - n0) * K);
  const float* b = bias ? bias + n0 : nullptr;
  if (env.isa >= Isa::Avx512) {
    avx512::linearTile(x, xStride, r0, r1, tileWeights.data(), DType::F32, 0, n1 - n0, K, nullptr, b, y + n0, yStride);
  } else if (env.isa >= Isa::Avx2) {
    avx2::linearTile(x, xStride, r0, r1, tileWeights.data(), DType::F32, 0, n1 - n0, K, nullptr, b, y + n0, yStride);
  } else {
    for (int64_t n = n0; n < n1; ++n) {
      for (int64_t r = r0; r < r1; ++r) {
        y[r * yStride + n] = portable::dot(x + r * xStride, tileWeights.data() + (n - n0) * K, K) + (bias ? bias[n] : 0.0f);
      }
    }
  }
}

}  // namespace

void quantizeInt4Activations(const KernelEnv& env, const float* x, int64_t rows, int64_t xStride, int64_t K,
                             int8_t* q, float* d, int32_t* c) {
  const Int4ActLayout L = int4ActLayout(K);
  portable::forEachRow(env, rows, K, [&](int64_t r) {
    int8_t* qr = q + r * L.codeStride;
    float* dr = d + r * L.scaleStride;
    int32_t* cr = c + r * L.scaleStride;
    if (env.isa >= Isa::Avx512) {
      avx512::quantizeInt4ActivationRow(x + r * xStride, K, qr, dr, cr);
    } else if (env.isa >= Isa::Avx2) {
      avx2::quantizeInt4ActivationRow(x + r * xStride, K, qr, dr, cr);
    } else {
      quantizeRowGeneric(x + r * xStride, K, qr, dr, cr);
    }
  });
}

void linearInt4Kernel(const KernelEnv& env, const float* x, int64_t rows, int64_t xStride, const void* w, int64_t N,
                      int64_t K, int64_t G, const float* bias, float* y, int64_t yStride, bool floatActivations) {
  if (rows <= 0 || N <= 0) return;
  const uint8_t* codes = static_cast<const uint8_t*>(w);
  const int64_t blocks = K / kInt4Block;
  const int64_t groups = K / G;
  // The scales follow the N * K / 2 code bytes; K % 32 == 0 makes that a multiple of 16, and weights start
  // 64-byte aligned in an engine, so they are aligned for uint16_t loads. A caller's buffer need not be.
  const uint8_t* after = codes + N * (K / 2);
  const uint16_t* scales;
  thread_local std::vector<uint16_t> scaleCopy;
  if (reinterpret_cast<uintptr_t>(after) % alignof(uint16_t) == 0) {
    scales = reinterpret_cast<const uint16_t*>(after);
  } else {
    scaleCopy.resize(static_cast<size_t>(N * groups));
    std::memcpy(scaleCopy.data(), after, scaleCopy.size() * sizeof(uint16_t));
    scales = scaleCopy.data();
  }
  const int64_t featBlocks = (N + kFeatBlock - 1) / kFeatBlock;
  const int64_t rowBlocks = (rows + kRowBlock - 1) / kRowBlock;
  const int64_t tasks = featBlocks * rowBlocks;
  const int64_t workPerTask = std::max<int64_t>(1, kFeatBlock * std::min(rows, kRowBlock) * K);
  const int64_t minChunk = std::max<int64_t>(1, kMinWorkPerChunk / workPerTask);
  if (floatActivations) {
    auto body = [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t r0 = (task / featBlocks) * kRowBlock;
        const int64_t n0 = (task % featBlocks) * kFeatBlock;
        tileFloat(env, x, xStride, r0, std::min(rows, r0 + kRowBlock), codes, scales, n0, std::min(N, n0 + kFeatBlock), K, G,
                  bias, y, yStride);
      }
    };
    if (env.pool && env.pool->size() > 1) env.pool->parallelFor(tasks, minChunk, body);
    else body(0, tasks);
    return;
  }
  // x quantized once per call (every task reads all of it).
  const Int4ActLayout L = int4ActLayout(K);
  thread_local std::vector<int8_t> xq;
  thread_local std::vector<float> xd;
  thread_local std::vector<int32_t> xc;
  xq.resize(static_cast<size_t>(rows * L.codeStride) + 64);
  xd.resize(static_cast<size_t>(rows * L.scaleStride) + 16);
  xc.resize(static_cast<size_t>(rows * L.scaleStride) + 16);
  // 64-byte aligned starts (row strides are multiples of 64 bytes), so the tiles' vector loads never split lines.
  int8_t* q = xq.data() + (64 - reinterpret_cast<uintptr_t>(xq.data()) % 64) % 64;
  float* d = xd.data() + (16 - (reinterpret_cast<uintptr_t>(xd.data()) / 4) % 16) % 16;
  int32_t* c = xc.data() + (16 - (reinterpret_cast<uintptr_t>(xc.data()) / 4) % 16) % 16;
  quantizeInt4Activations(env, x, rows, xStride, K, q, d, c);

  const Isa isa = env.isa;
  // Decode on the VNNI set at group 32 (the CPU default): one contiguous range of features per thread, so
  // the tile can stream it as four sequential streams far apart (linear_int4_avx512_bf16.cpp: 1.8x the
  // bytes a second of 48-feature tasks, whose streams would be a few KB apart).
  if (rows == 1 && isa >= Isa::Avx512Bf16 && G == kInt4Block) {
    auto range = [&](int64_t n0, int64_t n1) {
      avx512bf16::linearTileInt4(q, d, c, L.codeStride, L.scaleStride, 0, 1, codes, scales + n0 * blocks, blocks, n0, n1,
                                 K, bias, y, yStride);
    };
    if (env.pool && env.pool->size() > 1) env.pool->parallelFor(N, std::max<int64_t>(1, kMinWorkPerChunk / K), range);
    else range(0, N);
    return;
  }
  auto body = [&](int64_t begin, int64_t end) {
    // The tiles take one scale per 32-element block. Group 32 is the matrix's own scales; larger groups are
    // spread over their blocks here, a tile's rows at a time (1/16 of the codes' bytes, from cache).
    thread_local std::vector<uint16_t> spread;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t r0 = (task / featBlocks) * kRowBlock;
      const int64_t n0 = (task % featBlocks) * kFeatBlock;
      const int64_t r1 = std::min(rows, r0 + kRowBlock);
      const int64_t n1 = std::min(N, n0 + kFeatBlock);
      const uint16_t* bs = scales + n0 * blocks;
      if (G != kInt4Block) {
        spread.resize(static_cast<size_t>((n1 - n0) * blocks));
        for (int64_t n = n0; n < n1; ++n) {
          for (int64_t b = 0; b < blocks; ++b) spread[(n - n0) * blocks + b] = scales[n * groups + b * kInt4Block / G];
        }
        bs = spread.data();
      }
      if (isa >= Isa::Avx512Bf16) {
        avx512bf16::linearTileInt4(q, d, c, L.codeStride, L.scaleStride, r0, r1, codes, bs, blocks, n0, n1, K, bias, y, yStride);
      } else if (isa >= Isa::Avx2) {
        avx2::linearTileInt4(q, d, c, L.codeStride, L.scaleStride, r0, r1, codes, bs, blocks, n0, n1, K, bias, y, yStride);
      } else {
        tileGeneric(q, d, c, L, r0, r1, codes, bs, blocks, n0, n1, K, bias, y, yStride);
      }
    }
  };
  if (env.pool && env.pool->size() > 1) {
    env.pool->parallelFor(tasks, minChunk, body);
  } else {
    body(0, tasks);
  }
}

}  // namespace kiln
