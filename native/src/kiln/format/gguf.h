#pragma once
// GGUF files (ggml's docs/gguf.md; the format llama.cpp and node-llama-cpp run): a bounded reader over a
// memory map. Layout: "GGUF", u32 version (2 or 3), u64 tensor count, u64 metadata count, the metadata
// (key string, u32 value type, value), the tensor infos (name, u32 n_dims, u64 ne[n_dims], u32 type,
// u64 offset), padding to general.alignment, then the tensor data. Strings are u64 length + UTF-8 bytes.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kiln/format/ggml_quants.h"
#include "kiln/format/mapped_file.h"

namespace kiln {

// enum gguf_type (gguf.md "gguf_metadata_value_type").
enum class GgufValueType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};

// One metadata value. Numbers are held as double (every count, id and hyperparameter of a real file fits
// exactly; a 64-bit integer past 2^53 is refused when read, since JavaScript could not carry it).
struct GgufValue {
  GgufValueType type = GgufValueType::UINT32;
  GgufValueType itemType = GgufValueType::UINT32;  // ARRAY only
  double number = 0;                               // numeric and BOOL (0/1) scalars
  std::string string;                              // STRING
  std::vector<double> numbers;                     // ARRAY of numbers or bools
  std::vector<std::string> strings;                // ARRAY of strings
};

struct GgufTensor {
  std::string name;
  uint32_t type = 0;                // a GgmlType id (only supported ids get past the reader)
  std::vector<int64_t> dims;        // ggml's ne[]: innermost (contiguous) dimension first
  uint64_t byteOffset = 0;          // absolute, in the file
  uint64_t byteLength = 0;
  const uint8_t* data = nullptr;    // into the map
  // Row-major shape (dims reversed), as safetensors and Kiln write it.
  std::vector<int64_t> shape() const { return {dims.rbegin(), dims.rend()}; }
};

class GgufFile {
 public:
  // Maps and validates the whole structure: every count and length against the bytes left in the file
  // (and a fixed cap) before anything is allocated, known value and tensor types, dims and their product,
  // rows made of whole blocks, data ranges aligned, inside the file and not overlapping. Throws
  // std::runtime_error naming the file and the field (key or tensor) at fault.
  explicit GgufFile(const std::string& path);

  const std::string& path() const { return map_->path(); }
  size_t fileSize() const { return map_->size(); }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  // In file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }  // in file order
  const GgufTensor* find(const std::string& name) const;

 private:
  std::unique_ptr<MappedFile> map_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t> index_;
};

}  // namespace kiln
