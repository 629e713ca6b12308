#pragma once
// The `.engine` container (docs/engine-format.md): writing it atomically, and opening it with every
// structural check done before anything runs. Interpreting the header's ops is the runtime's job.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kiln/dtype.h"
#include "kiln/format/json.h"
#include "kiln/format/mapped_file.h"
#include "kiln/format/safetensors_writer.h"

namespace kiln {

constexpr uint32_t kEngineFormatVersion = 1;
constexpr char kEngineMagic[8] = {'K', 'I', 'L', 'N', 'E', 'N', 'G', '\0'};
constexpr uint64_t kEngineMaxHeaderBytes = 64ull << 20;
constexpr uint64_t kEngineAlignment = 64;

struct EngineWeight {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t offset = 0;      // relative to dataStart
  uint64_t byteLength = 0;
  int64_t groupSize = 0;       // int4 only (dtype.h): input features per scale; 0 otherwise
  const void* data = nullptr;  // into the map, 64-byte aligned
};

// The largest int4 group size accepted (a group's scale covers at most this many input features).
constexpr int64_t kMaxInt4GroupSize = 1 << 16;

class EngineFile {
 public:
  // Maps and validates the container: magic, format version (a different one is refused with both
  // numbers in the message), header length, XXH64 checksum, header JSON, `format`/`formatVersion`
  // fields, and the `weights` table (known dtype, byteLength matching the shape, aligned offsets, inside
  // the data region, no overlaps). Throws std::runtime_error whose message starts with the path.
  explicit EngineFile(const std::string& path);

  const std::string& path() const { return map_->path(); }
  const Json& header() const { return header_; }
  const std::vector<EngineWeight>& weights() const { return weights_; }
  std::string checksumHex() const;
  // The header JSON exactly as stored (bytes [24, 24 + H) of the file).
  std::string headerText() const;

 private:
  std::unique_ptr<MappedFile> map_;
  Json header_;
  std::vector<EngineWeight> weights_;
  uint64_t checksum_ = 0;
  uint64_t headerLength_ = 0;
};

// A weight for writeEngineFile: gathered from checkpoint tensors like a safetensors output tensor, or,
// when `constant` is set, the float32 values in `data` (cast to `dtype`). Mirrors EngineWeightSpec in
// native/lib/types.ts.
struct EngineWeightSpec {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<TensorSourceSpec> sources;
  bool constant = false;
  std::vector<float> data;
  int64_t groupSize = 0;  // int4 only: must equal the header entry's "groupSize"
};

// How far a quantized weight is from the float values it was made from: the largest error of an element
// relative to its row's largest magnitude (the quantization step is that / 127 for int8; for int4 a group's
// largest magnitude / 8), and the RMS
// error relative to the RMS of the weight.
struct QuantizationError {
  std::string name;
  double maxRelativeError = 0;
  double rmsRelativeError = 0;
  // q8_0 weights: how many of the blocks were kept exactly (GGUF Q8_0/Q4_0 values), of how many.
  uint64_t losslessBlocks = 0;
  uint64_t blocks = 0;
};

struct WriteEngineResult {
  uint64_t checksum = 0;
  uint64_t fileSize = 0;
  std::vector<QuantizationError> quantization;  // one per int8, int4, FP8 or q8_0 weight, in file order
};

// Per-row symmetric int8 quantization of w [rows, cols] (dtype.h's layout: q, then the scales).
QuantizationError quantizeRowsInt8(const std::string& name, const float* w, int64_t rows, int64_t cols, int8_t* q,
                                   float* scales);

// Per-tensor FP8 e4m3 quantization of w [rows, cols] (dtype.h's layout: the codes, then one float32
// scale; kiln/fp8.h's formulas). The error report is relative to the matrix's largest magnitude.
QuantizationError quantizeTensorFp8(const std::string& name, const float* w, int64_t rows, int64_t cols, uint8_t* codes,
                                    float* scale);
// Symmetric int4 quantization of w [rows, cols] in groups of `groupSize` columns (dtype.h's layout): `codes`
// gets rows * cols / 2 bytes, `scales` rows * (cols / groupSize) bfloat16 bits. cols % groupSize == 0 and
// groupSize % 32 == 0 are the caller's to check.
QuantizationError quantizeGroupsInt4(const std::string& name, const float* w, int64_t rows, int64_t cols,
                                     int64_t groupSize, uint8_t* codes, uint16_t* scales);
// Q8_0 blocks of w [rows, cols] (cols a multiple of 32; dtype.h's layout), each lossless where the values
// are a dequantized Q8_0 or Q4_0 block (quantizeBlockQ8_0Lossless), else ggml's reference Q8_0.
// `losslessBlocks` counts the former.
QuantizationError quantizeRowsQ8_0(const std::string& name, const float* w, int64_t rows, int64_t cols, uint8_t* out,
                                   uint64_t* losslessBlocks);

// Writes a `.engine` file atomically. `headerJson` is parsed and its `weights` table must list exactly
// `weights` (same order, names, dtypes, shapes; byteLength right; offsets multiples of 64, ascending and
// not overlapping); each weight is written at dataStart + offset, gaps zero-filled, then the XXH64
// trailer. Throws std::runtime_error starting with the path.
WriteEngineResult writeEngineFile(const std::string& path, const std::string& headerJson,
                                  const std::vector<EngineWeightSpec>& weights);

// 16 lowercase hex digits.
std::string hex64(uint64_t v);

uint64_t xxh64(const void* data, size_t size, uint64_t seed = 0);

}  // namespace kiln
