#pragma once
// Element types and the bit-exact conversions between them (round to nearest even, as torch does).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "kiln/fp8.h"

namespace kiln {

// I8 is a weight-only type (issue 12): an int8 matrix [N, K] is stored as N * K int8 values, row-major,
// then N float32 scales, one per row (output channel): w[n, k] = q[n, k] * scale[n]. int8ExtraBytes gives
// the bytes after the values; nothing else in a weight has extra bytes.
//
// F8E4M3 ("float8_e4m3fn") is the FP8 weight type (issue 10, decision 0015; kiln/fp8.h): a matrix [N, K]
// is N * K e4m3 codes, row-major, then one float32 scale for the whole matrix: w[n, k] = e4m3(c[n, k]) *
// scale. Its linears quantize their activations to e4m3 too, per row, on every call.
//
// I4 ("int4") is the other weight-only type (issue 12 on the CPU, issue 10 on the GPU; decision 0014): an
// int4 matrix [N, K] with group size G (a multiple of 32 dividing K, recorded per weight as "groupSize") is
// N rows of K / 2 bytes, then N * (K / G) bfloat16 scales, row-major (row n's groups in order).
// A row is blocks of 32 elements in 16 bytes: byte j of a block holds element j in its low nibble and
// element j + 16 in its high nibble, each as q + 8 with q in [-8, 7]. w[n, k] = q[n, k] * scale[n, k / G].
// Nothing but linear matrices is ever int4; dtypeSize is meaningless for it (int4Bytes is the size).
//
// Q8_0 ("q8_0") is llama.cpp's block format (ggml's block_q8_0), so that a GGUF file's Q8_0 and Q4_0
// matrices run as llama.cpp runs them (decision 0016). A Q8_0 matrix [N, K] (K a multiple of 32) is
// N * K / 32 blocks of 34 bytes, row-major: a float16 scale d then 32 int8 codes, w = d * q. A linear over
// it quantizes its input to the same blocks and multiplies codes in integers.
enum class DType : uint8_t { F32 = 0, F16 = 1, BF16 = 2, I32 = 3, I8 = 4, I4 = 5, F8E4M3 = 6, Q8_0 = 16 };

constexpr int64_t kQ8_0BlockElements = 32;
constexpr int64_t kQ8_0BlockBytes = 34;

inline size_t dtypeSize(DType t) {
  // Q8_0's codes are one byte each; its scales are inside the blocks (q8_0MatrixBytes).
  return t == DType::F16 || t == DType::BF16 ? 2 : t == DType::I8 || t == DType::F8E4M3 || t == DType::I4 || t == DType::Q8_0 ? 1 : 4;
}
// Bytes of a Q8_0 matrix of `rows` rows of `cols` (a multiple of 32) elements.
inline uint64_t q8_0MatrixBytes(uint64_t rows, uint64_t cols) {
  return rows * (cols / kQ8_0BlockElements) * kQ8_0BlockBytes;
}
// The per-row scales after an int8 matrix of `rows` rows (0 for other types).
inline uint64_t int8ExtraBytes(DType t, uint64_t rows) { return t == DType::I8 ? rows * 4 : 0; }
// The one float32 scale after an FP8 matrix (0 for other types).
inline uint64_t fp8ExtraBytes(DType t) { return t == DType::F8E4M3 ? 4 : 0; }
// True for a weight-only (quantized) storage type, which is never an activation.
inline bool isQuantizedType(DType t) { return t == DType::I8 || t == DType::I4 || t == DType::F8E4M3 || t == DType::Q8_0; }

// int4 layout constants (above): elements per 16-byte block, and the bytes of a whole [N, K] matrix of
// group size G (codes then scales); the caller has checked K % G == 0 and G % kInt4Block == 0.
constexpr int64_t kInt4Block = 32;
inline uint64_t int4CodeBytes(uint64_t N, uint64_t K) { return N * (K / 2); }
inline uint64_t int4Bytes(uint64_t N, uint64_t K, uint64_t G) { return int4CodeBytes(N, K) + N * (K / G) * 2; }

// Kiln's names ("float32", "float16", "bfloat16", "int32", "int8", "int4", "float8_e4m3fn", "q8_0"); false when unknown.
bool parseDTypeName(const std::string& name, DType* out);
const char* dtypeName(DType t);

inline float bf16ToF32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t f32ToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // quiet NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(bits >> 16);
}

float f16ToF32(uint16_t h);
uint16_t f32ToF16(float f);

// Reads element i of a weight array of type t as float32. The array may be unaligned: a safetensors
// file's data region starts wherever its header's length puts it (UBSan caught a misaligned float load
// here, issue 16), so elements are copied out byte-wise, which compilers turn into a plain load.
inline float loadAsF32(const void* data, DType t, size_t i) {
  const uint8_t* bytes = static_cast<const uint8_t*>(data);
  switch (t) {
    case DType::F32: {
      float v;
      std::memcpy(&v, bytes + i * 4, 4);
      return v;
    }
    case DType::BF16: {
      uint16_t h;
      std::memcpy(&h, bytes + i * 2, 2);
      return bf16ToF32(h);
    }
    case DType::F16: {
      uint16_t h;
      std::memcpy(&h, bytes + i * 2, 2);
      return f16ToF32(h);
    }
    case DType::I32: {
      int32_t v;
      std::memcpy(&v, bytes + i * 4, 4);
      return static_cast<float>(v);
    }
    case DType::I8: return static_cast<float>(static_cast<int8_t>(bytes[i]));  // the unscaled value
    case DType::F8E4M3: return e4m3ToF32(bytes[i]);  // likewise
    case DType::I4: return 0.0f;  // never read element-wise: its elements are nibbles (linearInt4Kernel)
    case DType::Q8_0: {  // element i of a Q8_0 array, scaled by its block's d
      const uint8_t* block = bytes + (i / kQ8_0BlockElements) * kQ8_0BlockBytes;
      uint16_t h;
      std::memcpy(&h, block, 2);
      return f16ToF32(h) * static_cast<float>(static_cast<int8_t>(block[2 + i % kQ8_0BlockElements]));
    }
  }
  return 0.0f;
}

}  // namespace kiln
