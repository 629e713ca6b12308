#pragma once
// The weight formats a decode GEMV streams (dtype.h's layouts), as the fused GEMV of gemv.cu reads them: a
// row of K weights is a run of 16-byte vectors of kElems weights each, and decode(v, c, f) writes the
// float32 weights of chunk c (elements 8c .. 8c + 7) of vector v, so that a kernel multiplies them with
// x eight elements at a time. Codes widen exactly; the scales are applied to finished sums: per row for
// int8 (rowScale), per vector (one group: G % 32 == 0) for int4 (vectorScale), and for FP8 (whose x is
// quantized too) once per GEMV, aScale * wScale (kiln/fp8.h; the fused kernel applies it).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "kiln/backends/cuda/kernels/common.cuh"
#include "kiln/fp8.h"

namespace kiln {
namespace cuda {

__device__ __forceinline__ float bf16BitsToFloat(uint16_t bits) { return __uint_as_float(static_cast<uint32_t>(bits) << 16); }

// A little-endian float32 read byte by byte (the scales after a matrix's codes need not be 4-byte aligned).
__device__ __forceinline__ float floatAt(const uint8_t* p) {
  const uint32_t bits = static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
                        (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
  return __uint_as_float(bits);
}

// The float32 scale of int8 row n: N float32 after the N * K codes (N * K need not be a multiple of 4).
__device__ __forceinline__ float int8RowScale(const uint8_t* scales, int64_t n) { return floatAt(scales + 4 * n); }

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

// --- FP8 e4m3 (kiln/fp8.h's arithmetic; fp8.cu and the fused GEMV of gemv.cu share these). ---

// Two floats to two e4m3 codes (low byte: a), round to nearest even, saturating: what kiln/fp8.h's
// f32ToE4m3 computes on the CPU.
__device__ __forceinline__ uint16_t toE4m3x2(float a, float b) {
  return static_cast<uint16_t>(__nv_cvt_float2_to_fp8x2(make_float2(a, b), __NV_SATFINITE, __NV_E4M3));
}

// The four e4m3 codes of word a (byte k: code k) as float32, exactly (e4m3 -> half and half -> float are).
__device__ __forceinline__ void e4m3x4ToFloats(uint32_t a, float* f) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const __nv_fp8x2_storage_t pair = static_cast<__nv_fp8x2_storage_t>((a >> (16 * h)) & 0xffffu);
    const __half2_raw raw = __nv_cvt_fp8x2_to_halfraw2(pair, __NV_E4M3);
    const float2 p = __half22float2(*reinterpret_cast<const __half2*>(&raw));
    f[2 * h] = p.x;
    f[2 * h + 1] = p.y;
  }
}

// An FP8 matrix's scale: the float32 after its N * K codes.
__device__ __forceinline__ float fp8MatrixScale(const uint8_t* w, int64_t N, int64_t K) { return floatAt(w + N * K); }

// Row `row` of x (K elements, K even; global or shared memory) quantized by the whole block: amax_r, then
// e4m3(x * 448 / amax_r) two at a time, each pair handed to put(k, codes) (elements k, k + 1). Returns
// aScale_r = amax_r / 448 to every thread; what put writes is visible to the block only after a
// __syncthreads(). `red` holds 32 floats.
template <typename X, typename Put>
__device__ __forceinline__ float quantizeRowFp8Pairs(const X* row, int64_t K, float* red, Put put) {
  float amax = 0.0f;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) amax = fmaxf(amax, fabsf(toF(row[k])));
  amax = blockMax(amax, red);
  const float inv = fp8InverseScaleOf(amax);
  for (int64_t k = 2 * static_cast<int64_t>(threadIdx.x); k < K; k += 2 * static_cast<int64_t>(blockDim.x)) {
    put(k, toE4m3x2(toF(row[k]) * inv, toF(row[k + 1]) * inv));
  }
  return fp8ScaleOf(amax);
}

// The row's codes into `codes`.
template <typename X>
__device__ __forceinline__ float quantizeRowFp8(const X* row, int64_t K, uint8_t* codes, float* red) {
  return quantizeRowFp8Pairs(row, K, red, [codes](int64_t k, uint16_t pair) { *reinterpret_cast<uint16_t*>(codes + k) = pair; });
}

// The fused GEMV's FP8 arithmetic without conversion instructions. Widening e4m3 through the hardware
// (e4m3x2 -> half2, then each half -> float) costs three conversions per two weights, and conversions issue
// at a fraction of the FMA rate, where a batch-1 GEMV must spend a few instructions per byte at most.
// Instead a weight code's seven magnitude bits go to bits 26..20 of a float32 and its sign to bit 31 (two
// shifts and a select): that float is exactly the code's value times 2^-120 (a subnormal code becomes a
// float32 subnormal, exact as long as denormals are not flushed, and Kiln does not build with fast math).
// x's codes are widened once per block, times 2^100, so every product is its true value times 2^-20, and
// so is the sum: each product of two e4m3 values is a multiple of 2^-18, so a partial sum is 0 or at
// least 2^-38 after scaling (never subnormal) and far below float32's largest; the float32 sum is the
// unscaled one's bit for bit, and the 2^20 goes into the scale applied at the end. (The NaN code 0x7f,
// which quantization never writes, widens to a finite value here.)
constexpr float kFp8XScale = 1.2676506002282294e30f;  // 2^100
constexpr float kFp8SumScale = 1048576.0f;           // 2^20

__device__ __forceinline__ void e4m3x4ToScaledFloats(uint32_t a, float* f) {
  f[0] = __uint_as_float(((a << 24) & 0x80000000u) | ((a << 20) & 0x07F00000u));
  f[1] = __uint_as_float(((a << 16) & 0x80000000u) | ((a << 12) & 0x07F00000u));
  f[2] = __uint_as_float(((a << 8) & 0x80000000u) | ((a << 4) & 0x07F00000u));
  f[3] = __uint_as_float((a & 0x80000000u) | ((a >> 4) & 0x07F00000u));
}

// The row's codes widened, times 2^100 (kFp8XScale), into float32 `out`.
template <typename X>
__device__ __forceinline__ float quantizeRowFp8Scaled(const X* row, int64_t K, float* out, float* red) {
  return quantizeRowFp8Pairs(row, K, red, [out](int64_t k, uint16_t pair) {
    float v[4];
    e4m3x4ToFloats(pair, v);
    *reinterpret_cast<float2*>(out + k) = make_float2(v[0] * kFp8XScale, v[1] * kFp8XScale);
  });
}

// 16-bit weights of the activations' type T.
template <typename T>
struct DenseWeights {
  static constexpr int kElems = 8;
  static constexpr bool kVectorScales = false;
  static constexpr bool kQuantizesX = false;
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
  static constexpr bool kQuantizesX = false;
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
  static constexpr bool kQuantizesX = false;
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

// FP8 e4m3 codes [N, K] row-major, then one float32 scale (dtype.h). x is quantized too (kQuantizesX: the
// kernel quantizes each row into shared memory, widened and scaled, quantizeRowFp8Scaled); decode gives
// the weights times 2^-120 (e4m3x4ToScaledFloats); both scales and the 2^20 are applied to the finished
// sum, so rowScale is 1 here and tensorScale the matrix's.
struct Fp8Weights {
  static constexpr int kElems = 16;
  static constexpr bool kVectorScales = false;
  static constexpr bool kQuantizesX = true;
  const uint8_t* w;
  int64_t N, K;
  __device__ __forceinline__ const uint4* row(int64_t n) const { return reinterpret_cast<const uint4*>(w + n * K); }
  __device__ __forceinline__ float rowScale(int64_t) const { return 1.0f; }
  __device__ __forceinline__ float vectorScale(int64_t, int64_t) const { return 1.0f; }
  __device__ __forceinline__ float tensorScale() const { return fp8MatrixScale(w, N, K); }
  __device__ __forceinline__ void decode(const uint4& v, int c, float* f) const {
    e4m3x4ToScaledFloats(c == 0 ? v.x : v.z, f);
    e4m3x4ToScaledFloats(c == 0 ? v.y : v.w, f + 4);
  }
};

}  // namespace cuda
}  // namespace kiln
