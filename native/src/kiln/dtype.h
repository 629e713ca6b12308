#pragma once
// Element types and the bit-exact conversions between them (round to nearest even, as torch does).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace kiln {

enum class DType : uint8_t { F32 = 0, F16 = 1, BF16 = 2, I32 = 3 };

inline size_t dtypeSize(DType t) { return t == DType::F16 || t == DType::BF16 ? 2 : 4; }

// Kiln's names ("float32", "float16", "bfloat16", "int32"); false when unknown.
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

// Reads element i of a weight array of type t as float32.
inline float loadAsF32(const void* data, DType t, size_t i) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(data)[i];
    case DType::BF16: return bf16ToF32(static_cast<const uint16_t*>(data)[i]);
    case DType::F16: return f16ToF32(static_cast<const uint16_t*>(data)[i]);
    case DType::I32: return static_cast<float>(static_cast<const int32_t*>(data)[i]);
  }
  return 0.0f;
}

}  // namespace kiln
