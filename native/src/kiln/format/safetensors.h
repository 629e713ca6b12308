#pragma once
// safetensors files: a validated reader over a memory map, and a writer that gathers, casts and
// concatenates tensors of other files into a new one (used by the converter).
//
// Format: u64 LE header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]},
// "__metadata__": {str: str}}, then the data; offsets are relative to the end of the header.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kiln/format/mapped_file.h"

namespace kiln {

struct SafetensorsTensor {
  std::string name;
  std::string dtype;             // "F32", "F16", "BF16", "I64", ...
  std::vector<int64_t> shape;
  uint64_t byteOffset = 0;       // absolute, in the file
  uint64_t byteLength = 0;
  const uint8_t* data = nullptr; // into the map
};

class SafetensorsFile {
 public:
  // Maps and validates: header length within the file and <= 100 MiB, JSON well-formed, every dtype
  // known, shapes non-negative without overflow, byteLength == elements * dtype size, offsets inside
  // the data region and not overlapping. Throws std::runtime_error naming the file and tensor.
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return map_->path(); }
  size_t fileSize() const { return map_->size(); }
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }  // ascending byteOffset
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const SafetensorsTensor* find(const std::string& name) const;

 private:
  std::unique_ptr<MappedFile> map_;
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, size_t> index_;  // name -> position in tensors_, for find()
};

// Size in bytes of a safetensors dtype code, 0 when unknown.
size_t safetensorsDTypeSize(const std::string& code);

}  // namespace kiln
