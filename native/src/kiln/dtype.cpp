#include "kiln/dtype.h"

namespace kiln {

bool parseDTypeName(const std::string& name, DType* out) {
  if (name == "float32") *out = DType::F32;
  else if (name == "float16") *out = DType::F16;
  else if (name == "bfloat16") *out = DType::BF16;
  else if (name == "int32") *out = DType::I32;
  else if (name == "int8") *out = DType::I8;
  else if (name == "float8_e4m3fn") *out = DType::F8E4M3;
  else if (name == "int4") *out = DType::I4;
  else if (name == "q8_0") *out = DType::Q8_0;
  else return false;
  return true;
}

const char* dtypeName(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::F16: return "float16";
    case DType::BF16: return "bfloat16";
    case DType::I32: return "int32";
    case DType::I8: return "int8";
    case DType::F8E4M3: return "float8_e4m3fn";
    case DType::I4: return "int4";
    case DType::Q8_0: return "q8_0";
  }
  return "unknown";
}

float f16ToF32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    // inf keeps a zero mantissa; NaN keeps its payload (shifted into the top of float's mantissa).
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + (127 - 15)) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {
    // Subnormal half: mant * 2^-24. Normalise it: every half subnormal is a normal float.
    int e = -1;
    do {
      mant <<= 1;
      ++e;
    } while ((mant & 0x400u) == 0);
    bits = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t f32ToF16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) {
    // NaN: keep it quiet and keep what of the payload fits.
    return static_cast<uint16_t>(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
  }
  // 65520 is halfway between 65504 (the largest half) and 65536; ties go to even, i.e. up to inf.
  if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);
  if (ax >= 0x38800000u) {
    // Normal half (>= 2^-14): rebias the exponent, round the 13 dropped mantissa bits to nearest even.
    // A carry out of the mantissa correctly bumps the exponent.
    uint32_t r = ax - (static_cast<uint32_t>(127 - 15) << 23);
    r += 0xfffu + ((r >> 13) & 1u);
    return static_cast<uint16_t>(sign | (r >> 13));
  }
  // Below 2^-25 (and exactly 2^-25, a tie with zero) rounds to zero.
  if (ax <= 0x33000000u) return sign;
  // Subnormal half: value / 2^-24 rounded to nearest even. value = m * 2^(e - 150) with the implicit bit.
  const uint32_t e = ax >> 23;
  const uint32_t m = (ax & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126 - e;  // 14..24 here
  uint32_t q = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  if (rem > half || (rem == half && (q & 1u))) ++q;  // q may reach 0x400: the smallest normal, encoded right
  return static_cast<uint16_t>(sign | q);
}

}  // namespace kiln
