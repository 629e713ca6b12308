#pragma once
// ggml's tensor types as GGUF files store them: their ids and block layouts (defined in ggml.h and
// ggml-common.h), dequantization of every type Kiln imports, and quantization of the types Kiln exports.
// Written from the GGML format description; each is checked in the tests against a reference written
// there independently (native/test/gguf.test.ts).
#include <cstddef>
#include <cstdint>
#include <string>

namespace kiln {

// enum ggml_type (ggml.h). Only the ids Kiln reads or writes are named; others are refused by id.
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q8_0 = 8,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  BF16 = 30,
};

struct GgmlTypeTraits {
  const char* name;
  uint32_t blockElements;  // elements per block (1 for the float types)
  uint32_t blockBytes;     // bytes per block
};

// Traits of a type id Kiln supports, or nullptr (unknown or unsupported id).
const GgmlTypeTraits* ggmlTypeTraits(uint32_t type);
// "Q4_K" etc., or "type <id>" for ids Kiln does not support.
std::string ggmlTypeName(uint32_t type);
// Parses a type name ("f16", "Q8_0", case-insensitive); false when unknown.
bool parseGgmlTypeName(const std::string& name, GgmlType* out);

// Converts `elements` values of `type` (a whole number of blocks, possibly unaligned in memory) to float.
void dequantizeRow(GgmlType type, const uint8_t* src, size_t elements, float* dst);
// Converts `elements` floats to `type` (F32, F16, BF16, Q8_0 or Q4_0; a whole number of blocks),
// with ggml's reference quantizers (quantize_row_q8_0_ref, quantize_row_q4_0_ref) so llama.cpp reads
// back what it would have written. Throws std::logic_error for a type it cannot write.
void quantizeRow(GgmlType type, const float* src, size_t elements, uint8_t* dst);

// One block of 32 floats as a Q8_0 block (float16 d, 32 int8 codes; Kiln's q8_0 engine weights, dtype.h),
// exactly when the values are those of a Q8_0 or a Q4_0 block (what a GGUF import of those types
// dequantizes to, in float32): ggml's reference quantizers give back their d and codes, Q4_0's codes
// q - 8 kept as int8 (its dot products are then the integers llama.cpp computes). Returns true then;
// any other block is quantized with quantize_row_q8_0_ref and false is returned.
bool quantizeBlockQ8_0Lossless(const float* x, uint8_t* block);

}  // namespace kiln
