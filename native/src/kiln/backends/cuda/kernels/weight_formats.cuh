#pragma once
// The weight formats a decode GEMV streams (dtype.h's layouts), as the fused GEMV of gemv.cu reads them: a
// row of K weights is a run of 16-byte vectors of kElems weights each, and decode(v, c, f) writes the
// float32 weights of chunk c (elements 8c .. 8c + 7) of vector v, so that a kernel multiplies them with
// x eight elements at a time. Codes widen exactly; the scales are applied to finished sums: per row for
// int8 (rowScale), per vector (one group: G % 32 == 0) for int4 (vectorScale).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kiln/backends/cuda/kernels/common.cuh"

namespace kiln {
namespace cuda {

__device__ __forceinline__ float bf16BitsToFloat(uint16_t bits) { return __uint_as_float(static_cast<uint32_t>(bits) << 16); }

// The float32 scale of int8 row n: N float32 after the N * K codes, read byte by byte (N * K need not be a
// multiple of 4).
__device__ __forceinline__ float int8RowScale(const uint8_t* scales, int64_t n) {
  const uint8_t* p = scales + 4 * n;
  const uint32_t bits = static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
                        (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
  return __uint_as_float(bits);
}

// The four int8 codes of word a (byte k: code k) as floats, exactly, without I2F: a conversion that runs
// at a quarter of the FMA rate and capped the int8 GEMV at about the rate the codes arrive from HBM.
// Each code, offset by 128 (the xor), becomes the low byte of 2^23's mantissa (a byte permute:
// [code, 0, 0, 0x4B]), and 2^23 + 128 is subtracted; both steps are exact.
__device__ __forceinline__ void int8x4ToFloats(uint32_t a, float* f) {
  const uint32_t u = a ^ 0x80808080u;
  f[0] = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7440)) - 8388736.0f;
  f[1] = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7441)) - 8388736.0f;
  f[2] = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7442)) - 8388736.0f;
  f[3] = __uint_as_float(__byte_perm(u, 0x4B000000u, 0x7443)) - 8388736.0f;
}

// A nibble v (0..15) as the float v - 8, exactly: 0x4B000000 | v is 2^23 + v, and 2^23 + 8 is exact.
__device__ __forceinline__ float int4Code(uint32_t v) { return __uint_as_float(0x4B000000u | v) - 8388616.0f; }

// The 32 codes of an int4 block (byte j: element j in the low nibble, j + 16 in the high), in element order.
__device__ __forceinline__ void unpackInt4Block(const uint4& b, float* w) {
  const uint32_t words[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
  for (int t = 0; t < 4; ++t) {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      w[4 * t + k] = int4Code((words[t] >> (8 * k)) & 0xFu);
      w[16 + 4 * t + k] = int4Code((words[t] >> (8 * k + 4)) & 0xFu);
    }
  }
}

// n float32 values (n a multiple of 8) stored as X at o (16-byte aligned), 16 bytes at a time.
template <typename X, int n>
__device__ __forceinline__ void storeVectors(X* o, const float* f) {
  if constexpr (sizeof(X) == 4) {
#pragma unroll
    for (int j = 0; j < n; j += 4) *reinterpret_cast<float4*>(o + j) = make_float4(f[j], f[j + 1], f[j + 2], f[j + 3]);
  } else {
#pragma unroll
    for (int j = 0; j < n; j += 8) {
      alignas(16) X v[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] = fromF<X>(f[j + e]);
      *reinterpret_cast<uint4*>(o + j) = *reinterpret_cast<const uint4*>(v);
    }
  }
}

// 16-bit weights of the activations' type T.
template <typename T>
struct DenseWeights {
  static constexpr int kElems = 8;
  static constexpr bool kVectorScales = false;
  const T* w;
  int64_t K;
  __device__ __forceinline__ const uint4* row(int64_t n) const { return reinterpret_cast<const uint4*>(w + n * K); }
  __device__ __forceinline__ float rowScale(int64_t) const { return 1.0f; }
  __device__ __forceinline__ float vectorScale(int64_t, int64_t) const { return 1.0f; }
  __device__ __forceinline__ void decode(const uint4& v, int, float* f) const { vectorToFloats(v, static_cast<const T*>(nullptr), f); }
};

// int8 codes [N, K] row-major, then N float32 row scales.
struct Int8Weights {
  static constexpr int kElems = 16;
  static constexpr bool kVectorScales = false;
  const int8_t* w;
  int64_t N, K;
  __device__ __forceinline__ const uint4* row(int64_t n) const { return reinterpret_cast<const uint4*>(w + n * K); }
  __device__ __forceinline__ float rowScale(int64_t n) const { return int8RowScale(reinterpret_cast<const uint8_t*>(w) + N * K, n); }
  __device__ __forceinline__ float vectorScale(int64_t, int64_t) const { return 1.0f; }
  __device__ __forceinline__ void decode(const uint4& v, int c, float* f) const {
    int8x4ToFloats(c == 0 ? v.x : v.z, f);
    int8x4ToFloats(c == 0 ? v.y : v.w, f + 4);
  }
};

// int4 blocks of 32 codes [N, K / 32] (16 bytes each), then N * K / G bfloat16 scales (G % 32 == 0).
struct Int4Weights {
  static constexpr int kElems = 32;
  static constexpr bool kVectorScales = true;
  const uint8_t* w;
  int64_t N, K, G;
  __device__ __forceinline__ const uint4* row(int64_t n) const { return reinterpret_cast<const uint4*>(w + n * (K / 2)); }
  __device__ __forceinline__ float rowScale(int64_t) const { return 1.0f; }
  // The scale of vector i (elements 32i .. 32i + 31) of row n.
  __device__ __forceinline__ float vectorScale(int64_t n, int64_t i) const {
    const uint16_t* scales = reinterpret_cast<const uint16_t*>(w + N * (K / 2));
    return bf16BitsToFloat(__ldg(scales + n * (K / G) + i / (G / 32)));
  }
  // Chunk c: elements 8c .. 8c + 7 are the low (c < 2) or high nibbles of bytes 8(c % 2) .. 8(c % 2) + 7.
  __device__ __forceinline__ void decode(const uint4& v, int c, float* f) const {
    const uint32_t a = (c & 1) ? v.z : v.x, b = (c & 1) ? v.w : v.y;
    const int shift = c >= 2 ? 4 : 0;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      f[k] = int4Code((a >> (8 * k + shift)) & 0xFu);
      f[4 + k] = int4Code((b >> (8 * k + shift)) & 0xFu);
    }
  }
};

}  // namespace cuda
}  // namespace kiln
