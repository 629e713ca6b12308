#include "kiln/format/gguf_writer.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <stdexcept>

#include "kiln/dtype.h"
#include "kiln/format/atomic_file.h"
#include "kiln/format/describe.h"
#include "kiln/format/safetensors.h"

namespace kiln {

namespace {

// Collects the header bytes (little-endian, as gguf.md specifies).
class HeaderBytes {
 public:
  template <typename T>
  void put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    bytes_.insert(bytes_.end(), p, p + sizeof(T));
  }
  void string(const std::string& s) {
    put<uint64_t>(s.size());
    bytes_.insert(bytes_.end(), s.begin(), s.end());
  }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

void putNumber(HeaderBytes& h, GgufValueType t, double v, const std::string& what) {
  switch (t) {
    case GgufValueType::UINT8: h.put<uint8_t>(static_cast<uint8_t>(v)); return;
    case GgufValueType::INT8: h.put<int8_t>(static_cast<int8_t>(v)); return;
    case GgufValueType::UINT16: h.put<uint16_t>(static_cast<uint16_t>(v)); return;
    case GgufValueType::INT16: h.put<int16_t>(static_cast<int16_t>(v)); return;
    case GgufValueType::UINT32: h.put<uint32_t>(static_cast<uint32_t>(v)); return;
    case GgufValueType::INT32: h.put<int32_t>(static_cast<int32_t>(v)); return;
    case GgufValueType::FLOAT32: h.put<float>(static_cast<float>(v)); return;
    case GgufValueType::BOOL: h.put<uint8_t>(v != 0 ? 1 : 0); return;
    case GgufValueType::UINT64: h.put<uint64_t>(static_cast<uint64_t>(v)); return;
    case GgufValueType::INT64: h.put<int64_t>(static_cast<int64_t>(v)); return;
    case GgufValueType::FLOAT64: h.put<double>(v); return;
    default: throw std::runtime_error(what + ": not a number type");
  }
}

// What one output tensor reads: its sources (mapped), their rows in order, the shape they make.
struct Source {
  struct Part {
    const SafetensorsTensor* tensor = nullptr;
    DType dtype = DType::F32;
    uint64_t elements = 0;
  };
  std::vector<Part> parts;
  std::vector<int64_t> shape;  // row-major: dimension 0 the sum of the parts'
  uint64_t rows = 0;
  uint64_t rowElements = 0;
  uint64_t outBytes = 0;
};

}  // namespace

uint64_t ropePermutedRow(uint64_t row, uint64_t rows, uint32_t heads, bool inverse) {
  const uint64_t headRows = rows / heads, half = headRows / 2;
  const uint64_t h = row / headRows, r = row % headRows;
  // Forward (export): new row h*headRows + 2j + s <- old row h*headRows + s*half + j.
  // Inverse (import): new row h*headRows + s*half + j <- old row h*headRows + 2j + s.
  if (!inverse) return h * headRows + (r % 2) * half + r / 2;
  return h * headRows + (r % half) * 2 + r / half;
}

GgufWriteResult writeGguf(const std::string& path, const std::vector<std::pair<std::string, GgufValue>>& metadata,
                          const std::vector<GgufTensorWriteSpec>& tensors, uint32_t alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) throw std::runtime_error(path + ": alignment must be a power of two");
  std::map<std::string, std::unique_ptr<SafetensorsFile>> files;
  std::vector<Source> sources;
  for (const GgufTensorWriteSpec& spec : tensors) {
    std::string what = path + ": tensor \"" + spec.name + "\"";
    if (spec.sources.empty()) throw std::runtime_error(what + ": no sources");
    Source s;
    for (const GgufTensorSource& src : spec.sources) {
      const std::string from = what + " (from " + src.file + " \"" + src.tensor + "\")";
      auto& file = files[src.file];
      if (!file) file = std::make_unique<SafetensorsFile>(src.file);
      Source::Part part;
      part.tensor = file->find(src.tensor);
      if (!part.tensor) throw std::runtime_error(from + ": no such tensor in the source");
      if (part.tensor->dtype == "F32") part.dtype = DType::F32;
      else if (part.tensor->dtype == "F16") part.dtype = DType::F16;
      else if (part.tensor->dtype == "BF16") part.dtype = DType::BF16;
      else throw std::runtime_error(from + ": source dtype " + part.tensor->dtype + " is not F32, F16 or BF16");
      const auto& shape = part.tensor->shape;
      if (shape.empty() || shape.size() > 4) throw std::runtime_error(from + ": " + std::to_string(shape.size()) + " dimensions (1 to 4 supported)");
      uint64_t elements = 0;
      shapeElements(shape, &elements);
      if (elements == 0) throw std::runtime_error(from + ": empty tensor");
      part.elements = elements;
      if (s.parts.empty()) {
        s.shape = shape;
      } else {
        if (shape.size() != s.shape.size() || !std::equal(shape.begin() + 1, shape.end(), s.shape.begin() + 1)) {
          throw std::runtime_error(from + ": shape " + shapeString(shape) + " does not continue " + shapeString(s.shape) + " along dimension 0");
        }
        s.shape[0] += shape[0];
      }
      s.parts.push_back(part);
    }
    uint64_t elements = 0;
    shapeElements(s.shape, &elements);
    s.rowElements = static_cast<uint64_t>(s.shape.back());
    s.rows = elements / s.rowElements;
    const auto& shape = s.shape;
    if (spec.permuteHeads > 0 && s.parts.size() > 1) throw std::runtime_error(what + ": the rope permutation takes one source");
    const GgmlTypeTraits& traits = *ggmlTypeTraits(static_cast<uint32_t>(spec.type));
    if (s.rowElements % traits.blockElements != 0) {
      throw std::runtime_error(what + ": rows of " + std::to_string(s.rowElements) + " elements are not whole " +
                               traits.name + " blocks of " + std::to_string(traits.blockElements));
    }
    if (spec.permuteHeads > 0 && (shape.size() != 2 || s.rows % (2ull * spec.permuteHeads) != 0)) {
      throw std::runtime_error(what + ": cannot permute " + shapeString(shape) + " for " + std::to_string(spec.permuteHeads) + " rope heads");
    }
    s.outBytes = s.rowElements / traits.blockElements * traits.blockBytes * s.rows;
    sources.push_back(s);
  }

  HeaderBytes h;
  h.put<uint32_t>(0x46554747);  // "GGUF"
  h.put<uint32_t>(3);
  h.put<uint64_t>(tensors.size());
  h.put<uint64_t>(metadata.size());
  for (const auto& [key, value] : metadata) {
    const std::string what = path + ": metadata \"" + key + "\"";
    h.string(key);
    h.put<uint32_t>(static_cast<uint32_t>(value.type));
    if (value.type == GgufValueType::STRING) {
      h.string(value.string);
    } else if (value.type == GgufValueType::ARRAY) {
      h.put<uint32_t>(static_cast<uint32_t>(value.itemType));
      if (value.itemType == GgufValueType::STRING) {
        h.put<uint64_t>(value.strings.size());
        for (const auto& s : value.strings) h.string(s);
      } else {
        h.put<uint64_t>(value.numbers.size());
        for (double v : value.numbers) putNumber(h, value.itemType, v, what);
      }
    } else {
      putNumber(h, value.type, value.number, what);
    }
  }
  const auto padded = [&](uint64_t n) { return (n + alignment - 1) / alignment * alignment; };
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    h.string(tensors[i].name);
    const auto& shape = sources[i].shape;
    h.put<uint32_t>(static_cast<uint32_t>(shape.size()));
    for (auto it = shape.rbegin(); it != shape.rend(); ++it) h.put<uint64_t>(static_cast<uint64_t>(*it));  // ne[]: innermost first
    h.put<uint32_t>(static_cast<uint32_t>(tensors[i].type));
    h.put<uint64_t>(offset);
    offset += padded(sources[i].outBytes);
  }

  AtomicFileWriter out(path);
  out.write(h.bytes().data(), h.bytes().size());
  out.writeZeros(padded(h.bytes().size()) - h.bytes().size());
  GgufWriteResult result;
  std::vector<float> row, back;
  std::vector<uint8_t> packed;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const GgufTensorWriteSpec& spec = tensors[i];
    const Source& s = sources[i];
    const GgmlTypeTraits& traits = *ggmlTypeTraits(static_cast<uint32_t>(spec.type));
    row.resize(s.rowElements);
    back.resize(s.rowElements);
    packed.resize(s.rowElements / traits.blockElements * traits.blockBytes);
    double sumSquares = 0, sumErrorSquares = 0, maxError = 0;
    // Rows in order across the parts: dimension 0 of a row-major tensor is its outermost.
    std::vector<std::pair<const Source::Part*, uint64_t>> rowsOf;
    for (const Source::Part& part : s.parts) {
      // Rows of the innermost dimension (vectors are handled whole below).
      for (uint64_t r = 0; s.shape.size() > 1 && r < part.elements / s.rowElements; ++r) rowsOf.emplace_back(&part, r);
    }
    for (uint64_t r = 0; r < s.rows; ++r) {
      if (s.shape.size() == 1) {
        // A vector is one row, which its parts fill one after another (GPT-2's q/k/v biases back into c_attn's).
        uint64_t j = 0;
        for (const Source::Part& part : s.parts) {
          for (uint64_t e = 0; e < part.elements; ++e) row[j++] = loadAsF32(part.tensor->data, part.dtype, e) + spec.valueOffset;
        }
      } else {
        const uint64_t index = spec.permuteHeads ? ropePermutedRow(r, s.rows, spec.permuteHeads, false) : r;
        const Source::Part& part = *rowsOf[index].first;
        const uint64_t from = rowsOf[index].second;
        for (uint64_t j = 0; j < s.rowElements; ++j) row[j] = loadAsF32(part.tensor->data, part.dtype, from * s.rowElements + j) + spec.valueOffset;
      }
      quantizeRow(spec.type, row.data(), row.size(), packed.data());
      dequantizeRow(spec.type, packed.data(), row.size(), back.data());
      for (uint64_t j = 0; j < s.rowElements; ++j) {
        const double e = static_cast<double>(back[j]) - row[j];
        sumSquares += static_cast<double>(row[j]) * row[j];
        sumErrorSquares += e * e;
        maxError = std::max(maxError, std::fabs(e));
      }
      out.write(packed.data(), packed.size());
    }
    out.writeZeros(padded(s.outBytes) - s.outBytes);
    const double n = static_cast<double>(s.rows * s.rowElements);
    result.errors.push_back({spec.name, std::sqrt(sumSquares / n), std::sqrt(sumErrorSquares / n), maxError});
  }
  result.fileSize = out.bytesWritten();
  out.commit();
  return result;
}

}  // namespace kiln
