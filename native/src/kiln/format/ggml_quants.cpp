#include "kiln/format/ggml_quants.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "kiln/dtype.h"

namespace kiln {

namespace {

// Block sizes (ggml-common.h): QK4_0 = QK4_1 = QK8_0 = 32, QK_K = 256, K_SCALE_SIZE = 12.
constexpr uint32_t kQK = 32;
constexpr uint32_t kQKK = 256;

const GgmlTypeTraits kF32{"F32", 1, 4};
const GgmlTypeTraits kF16{"F16", 1, 2};
const GgmlTypeTraits kBF16{"BF16", 1, 2};
const GgmlTypeTraits kQ4_0{"Q4_0", kQK, 2 + kQK / 2};                     // half d; u8 qs[16]
const GgmlTypeTraits kQ4_1{"Q4_1", kQK, 4 + kQK / 2};                     // half d, m; u8 qs[16]
const GgmlTypeTraits kQ8_0{"Q8_0", kQK, 2 + kQK};                         // half d; i8 qs[32]
const GgmlTypeTraits kQ4_K{"Q4_K", kQKK, 4 + 12 + kQKK / 2};              // half d, dmin; scales[12]; qs[128]
const GgmlTypeTraits kQ5_K{"Q5_K", kQKK, 4 + 12 + kQKK / 8 + kQKK / 2};   // ... qh[32]; qs[128]
const GgmlTypeTraits kQ6_K{"Q6_K", kQKK, kQKK / 2 + kQKK / 4 + kQKK / 16 + 2};  // ql[128] qh[64] i8 scales[16] half d

float halfAt(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16ToF32(h);
}

// get_scale_min_k4 (ggml-quants.c): the 6-bit scale and min of sub-block j, packed in 12 bytes.
void scaleMinK4(int j, const uint8_t* q, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = q[j] & 63;
    *min = q[j + 4] & 63;
  } else {
    *scale = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

void dequantizeQ4_0(const uint8_t* b, float* y) {
  const float d = halfAt(b);
  const uint8_t* qs = b + 2;
  for (uint32_t j = 0; j < kQK / 2; ++j) {
    y[j] = static_cast<float>((qs[j] & 0xF) - 8) * d;
    y[j + kQK / 2] = static_cast<float>((qs[j] >> 4) - 8) * d;
  }
}

void dequantizeQ4_1(const uint8_t* b, float* y) {
  const float d = halfAt(b), m = halfAt(b + 2);
  const uint8_t* qs = b + 4;
  for (uint32_t j = 0; j < kQK / 2; ++j) {
    y[j] = static_cast<float>(qs[j] & 0xF) * d + m;
    y[j + kQK / 2] = static_cast<float>(qs[j] >> 4) * d + m;
  }
}

void dequantizeQ8_0(const uint8_t* b, float* y) {
  const float d = halfAt(b);
  for (uint32_t j = 0; j < kQK; ++j) y[j] = static_cast<float>(static_cast<int8_t>(b[2 + j])) * d;
}

void dequantizeQ4_K(const uint8_t* b, float* y) {
  const float d = halfAt(b), dmin = halfAt(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  for (int j = 0, is = 0; j < static_cast<int>(kQKK); j += 64, is += 2, q += 32) {
    uint8_t sc, m;
    scaleMinK4(is, scales, &sc, &m);
    const float d1 = d * sc, m1 = dmin * m;
    scaleMinK4(is + 1, scales, &sc, &m);
    const float d2 = d * sc, m2 = dmin * m;
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
  }
}

void dequantizeQ5_K(const uint8_t* b, float* y) {
  const float d = halfAt(b), dmin = halfAt(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* ql = b + 16 + kQKK / 8;
  uint8_t u1 = 1, u2 = 2;
  for (int j = 0, is = 0; j < static_cast<int>(kQKK); j += 64, is += 2, ql += 32, u1 <<= 2, u2 <<= 2) {
    uint8_t sc, m;
    scaleMinK4(is, scales, &sc, &m);
    const float d1 = d * sc, m1 = dmin * m;
    scaleMinK4(is + 1, scales, &sc, &m);
    const float d2 = d * sc, m2 = dmin * m;
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
  }
}

void dequantizeQ6_K(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + kQKK / 2;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + kQKK / 2 + kQKK / 4);
  const float d = halfAt(b + kQKK / 2 + kQKK / 4 + kQKK / 16);
  for (uint32_t n = 0; n < kQKK; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l + 0] = d * static_cast<float>(sc[is + 0]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
  }
}

// quantize_row_q8_0_ref: d = max|x| / 127, q = round(x / d).
void quantizeQ8_0(const float* x, uint8_t* b) {
  float amax = 0.0f;
  for (uint32_t j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / ((1 << 7) - 1);
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  const uint16_t dh = f32ToF16(d);
  std::memcpy(b, &dh, 2);
  for (uint32_t j = 0; j < kQK; ++j) b[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::roundf(x[j] * id)));
}

// quantize_row_q4_0_ref: d = (the value of largest magnitude) / -8, q = min(15, (int8)(x / d + 8.5)).
void quantizeQ4_0(const float* x, uint8_t* b) {
  float amax = 0.0f, max = 0.0f;
  for (uint32_t j = 0; j < kQK; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  const float d = max / -8;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  const uint16_t dh = f32ToF16(d);
  std::memcpy(b, &dh, 2);
  for (uint32_t j = 0; j < kQK / 2; ++j) {
    const float x0 = x[j] * id, x1 = x[kQK / 2 + j] * id;
    const uint8_t q0 = static_cast<uint8_t>(std::min<int>(15, static_cast<int8_t>(x0 + 8.5f)));
    const uint8_t q1 = static_cast<uint8_t>(std::min<int>(15, static_cast<int8_t>(x1 + 8.5f)));
    b[2 + j] = static_cast<uint8_t>(q0 | (q1 << 4));
  }
}

}  // namespace

const GgmlTypeTraits* ggmlTypeTraits(uint32_t type) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::F32: return &kF32;
    case GgmlType::F16: return &kF16;
    case GgmlType::BF16: return &kBF16;
    case GgmlType::Q4_0: return &kQ4_0;
    case GgmlType::Q4_1: return &kQ4_1;
    case GgmlType::Q8_0: return &kQ8_0;
    case GgmlType::Q4_K: return &kQ4_K;
    case GgmlType::Q5_K: return &kQ5_K;
    case GgmlType::Q6_K: return &kQ6_K;
  }
  return nullptr;
}

std::string ggmlTypeName(uint32_t type) {
  const GgmlTypeTraits* t = ggmlTypeTraits(type);
  return t ? t->name : "type " + std::to_string(type);
}

bool parseGgmlTypeName(const std::string& name, GgmlType* out) {
  std::string upper = name;
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (uint32_t id : {0u, 1u, 2u, 3u, 8u, 12u, 13u, 14u, 30u}) {
    if (upper == ggmlTypeTraits(id)->name) {
      *out = static_cast<GgmlType>(id);
      return true;
    }
  }
  return false;
}

void dequantizeRow(GgmlType type, const uint8_t* src, size_t elements, float* dst) {
  const GgmlTypeTraits& t = *ggmlTypeTraits(static_cast<uint32_t>(type));
  const size_t blocks = elements / t.blockElements;
  for (size_t i = 0; i < blocks; ++i) {
    const uint8_t* b = src + i * t.blockBytes;
    float* y = dst + i * t.blockElements;
    switch (type) {
      case GgmlType::F32: std::memcpy(y, b, 4); break;
      case GgmlType::F16: *y = halfAt(b); break;
      case GgmlType::BF16: {
        uint16_t h;
        std::memcpy(&h, b, 2);
        *y = bf16ToF32(h);
        break;
      }
      case GgmlType::Q4_0: dequantizeQ4_0(b, y); break;
      case GgmlType::Q4_1: dequantizeQ4_1(b, y); break;
      case GgmlType::Q8_0: dequantizeQ8_0(b, y); break;
      case GgmlType::Q4_K: dequantizeQ4_K(b, y); break;
      case GgmlType::Q5_K: dequantizeQ5_K(b, y); break;
      case GgmlType::Q6_K: dequantizeQ6_K(b, y); break;
    }
  }
}

bool quantizeBlockQ8_0Lossless(const float* x, uint8_t* block) {
  float back[kQK];
  const auto same = [&] { return std::equal(back, back + kQK, x); };  // values, so -0 == 0
  quantizeQ8_0(x, block);
  dequantizeQ8_0(block, back);
  if (same()) return true;
  uint8_t q4[2 + kQK / 2];
  quantizeQ4_0(x, q4);
  dequantizeQ4_0(q4, back);
  if (!same()) return false;  // the block keeps the Q8_0 reference quantization
  std::memcpy(block, q4, 2);
  for (uint32_t j = 0; j < kQK / 2; ++j) {
    block[2 + j] = static_cast<uint8_t>(static_cast<int8_t>((q4[2 + j] & 0xF) - 8));
    block[2 + j + kQK / 2] = static_cast<uint8_t>(static_cast<int8_t>((q4[2 + j] >> 4) - 8));
  }
  return true;
}

void quantizeRow(GgmlType type, const float* src, size_t elements, uint8_t* dst) {
  switch (type) {
    case GgmlType::F32: std::memcpy(dst, src, elements * 4); return;
    case GgmlType::F16:
    case GgmlType::BF16:
      for (size_t i = 0; i < elements; ++i) {
        const uint16_t h = type == GgmlType::F16 ? f32ToF16(src[i]) : f32ToBf16(src[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    case GgmlType::Q8_0:
      for (size_t i = 0; i < elements / kQK; ++i) quantizeQ8_0(src + i * kQK, dst + i * kQ8_0.blockBytes);
      return;
    case GgmlType::Q4_0:
      for (size_t i = 0; i < elements / kQK; ++i) quantizeQ4_0(src + i * kQK, dst + i * kQ4_0.blockBytes);
      return;
    default:
      throw std::logic_error("quantizeRow: Kiln does not write " + ggmlTypeName(static_cast<uint32_t>(type)));
  }
}

}  // namespace kiln
