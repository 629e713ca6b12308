#include "kiln/backends/cpu/kernels/portable.h"

#include <cstring>

namespace kiln {
namespace portable {

namespace {

// float16 -> float32 without branches on the common (normal) path, exact for every input: the half's
// exponent and mantissa are shifted into place and rebiased; inf/NaN get the rest of the exponent;
// subnormals are normalised by the float unit (magic - magic). It gives the same values as
// kiln::f16ToF32, which is out of line; this one is inlined into the conversion loop.
inline float halfToFloat(uint16_t h) {
  const uint32_t shiftedExp = 0x7c00u << 13;
  uint32_t o = static_cast<uint32_t>(h & 0x7fffu) << 13;
  const uint32_t exp = o & shiftedExp;
  o += static_cast<uint32_t>(127 - 15) << 23;
  float f;
  if (exp == shiftedExp) {
    o += static_cast<uint32_t>(128 - 16) << 23;  // inf / NaN
    std::memcpy(&f, &o, 4);
  } else if (exp == 0) {
    o += 1u << 23;
    std::memcpy(&f, &o, 4);
    const uint32_t magicBits = 113u << 23;  // 2^-14
    float magic;
    std::memcpy(&magic, &magicBits, 4);
    f -= magic;
  } else {
    std::memcpy(&f, &o, 4);
  }
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  bits |= static_cast<uint32_t>(h & 0x8000u) << 16;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace

float dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += a[k + j] * b[k + j];
  }
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; k < n; ++k) s += a[k] * b[k];
  return s;
}

void axpy(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

void toF32(const void* data, DType t, int64_t n, float* out) {
  switch (t) {
    case DType::F32:
      std::memcpy(out, data, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::BF16: {
      const uint16_t* p = static_cast<const uint16_t*>(data);
      for (int64_t i = 0; i < n; ++i) out[i] = bf16ToF32(p[i]);
      return;
    }
    case DType::F16: {
      const uint16_t* p = static_cast<const uint16_t*>(data);
      for (int64_t i = 0; i < n; ++i) out[i] = halfToFloat(p[i]);
      return;
    }
    case DType::I32: {
      const int32_t* p = static_cast<const int32_t*>(data);
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(p[i]);
      return;
    }
    case DType::I8: {  // the unscaled values
      const int8_t* p = static_cast<const int8_t*>(data);
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(p[i]);
      return;
    }
    case DType::F8E4M3: {  // likewise unscaled
      const uint8_t* p = static_cast<const uint8_t*>(data);
      for (int64_t i = 0; i < n; ++i) out[i] = e4m3ToF32(p[i]);
      return;
    }
    case DType::I4:  // packed nibbles with group scales: only linearInt4Kernel reads them
      for (int64_t i = 0; i < n; ++i) out[i] = 0.0f;
      return;
    case DType::Q8_0:  // whole blocks from a block's start: d * q
      for (int64_t i = 0; i < n; ++i) out[i] = loadAsF32(data, t, static_cast<size_t>(i));
      return;
  }
}

}  // namespace portable
}  // namespace kiln
