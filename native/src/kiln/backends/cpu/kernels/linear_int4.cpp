// int4 weight-only linears (W4A16; dtype.h's layout, decision 0014): the portable tile and the dispatch to
// the AVX2 and AVX-512 tiles (linear_int4_avx2.cpp, linear_int4_avx512.cpp). Work is cut as in
// linear.cpp: tiles of features x rows, so prefill reuses each unpacked weight block for many rows and
// decode streams every code byte once.
#include <algorithm>
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
// From this many rows of a tile, the AVX2 set dequantizes the tile's weights first (below).
constexpr int64_t kDequantRows = 16;

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

void tileGeneric(const float* x, int64_t xStride, int64_t r0, int64_t r1, const uint8_t* codes, const uint16_t* scales,
                 int64_t n0, int64_t n1, int64_t K, int64_t G, const float* bias, float* y, int64_t yStride) {
  thread_local std::vector<float> rowBuf;
  if (static_cast<int64_t>(rowBuf.size()) < K) rowBuf.resize(static_cast<size_t>(K));
  for (int64_t n = n0; n < n1; ++n) {
    dequantizeRow(codes, scales, n, K, G, rowBuf.data());
    const float b = bias ? bias[n] : 0.0f;
    for (int64_t r = r0; r < r1; ++r) y[r * yStride + n] = portable::dot(x + r * xStride, rowBuf.data(), K) + b;
  }
}

}  // namespace

void linearInt4Kernel(const KernelEnv& env, const float* x, int64_t rows, int64_t xStride, const void* w, int64_t N,
                      int64_t K, int64_t G, const float* bias, float* y, int64_t yStride) {
  if (rows <= 0 || N <= 0) return;
  const uint8_t* codes = static_cast<const uint8_t*>(w);
  // The scales follow the N * K / 2 code bytes; K % 32 == 0 makes that a multiple of 16, and weights start
  // 64-byte aligned in an engine, so they are aligned for uint16_t loads. A caller's buffer need not be.
  const uint8_t* after = codes + N * (K / 2);
  const uint16_t* scales;
  thread_local std::vector<uint16_t> scaleCopy;
  if (reinterpret_cast<uintptr_t>(after) % alignof(uint16_t) == 0) {
    scales = reinterpret_cast<const uint16_t*>(after);
  } else {
    scaleCopy.resize(static_cast<size_t>(N * (K / G)));
    std::memcpy(scaleCopy.data(), after, scaleCopy.size() * sizeof(uint16_t));
    scales = scaleCopy.data();
  }
  const int64_t featBlocks = (N + kFeatBlock - 1) / kFeatBlock;
  const int64_t rowBlocks = (rows + kRowBlock - 1) / kRowBlock;
  const Isa isa = env.isa;
  auto body = [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t r0 = (task / featBlocks) * kRowBlock;
      const int64_t n0 = (task % featBlocks) * kFeatBlock;
      const int64_t r1 = std::min(rows, r0 + kRowBlock);
      const int64_t n1 = std::min(N, n0 + kFeatBlock);
      if (isa >= Isa::Avx512) {
        avx512::linearTileInt4(x, xStride, r0, r1, codes, scales, n0, n1, K, G, bias, y, yStride);
      } else if (isa >= Isa::Avx2 && r1 - r0 >= kDequantRows) {
        // AVX2, many rows (prefill): the tile's weight rows dequantized once (exact) into float32, then the
        // float32 tile of linear_avx2.cpp, whose 4 x 3 register blocking the int4 tile cannot afford (its
        // codes and scales need registers too): 32 against 21 ms for 64 rows x [5632, 2048] on one Zen 4
        // core. With AVX-512 the int4 tile already runs faster than this (15 against 30 ms).
        thread_local std::vector<float> tileWeights;
        tileWeights.resize(static_cast<size_t>((n1 - n0) * K));
        avx2::dequantizeInt4Rows(codes, scales, n0, n1, K, G, tileWeights.data());
        avx2::linearTile(x, xStride, r0, r1, tileWeights.data(), DType::F32, 0, n1 - n0, K, nullptr,
                         bias ? bias + n0 : nullptr, y + n0, yStride);
      } else if (isa >= Isa::Avx2) {
        avx2::linearTileInt4(x, xStride, r0, r1, codes, scales, n0, n1, K, G, bias, y, yStride);
      } else {
        tileGeneric(x, xStride, r0, r1, codes, scales, n0, n1, K, G, bias, y, yStride);
      }
    }
  };
  const int64_t tasks = featBlocks * rowBlocks;
  const int64_t workPerTask = std::max<int64_t>(1, kFeatBlock * std::min(rows, kRowBlock) * K);
  if (env.pool && env.pool->size() > 1) {
    env.pool->parallelFor(tasks, std::max<int64_t>(1, kMinWorkPerChunk / workPerTask), body);
  } else {
    body(0, tasks);
  }
}

}  // namespace kiln
