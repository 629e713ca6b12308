#include "kiln/format/gguf_import.h"

#include <cmath>
#include <set>
#include <stdexcept>

#include "kiln/format/atomic_file.h"
#include "kiln/format/describe.h"
#include "kiln/format/gguf.h"
#include "kiln/format/gguf_writer.h"
#include "kiln/format/json.h"
#include "kiln/format/safetensors_writer.h"

namespace kiln {

namespace {

const char* safetensorsCode(DType t) { return t == DType::F16 ? "F16" : t == DType::BF16 ? "BF16" : "F32"; }

}  // namespace

void writeSafetensorsFromGguf(const std::string& ggufPath, const std::string& outPath,
                              const std::map<std::string, std::string>& metadata,
                              const std::vector<GgufImportSpec>& tensors, bool rejectNonFinite) {
  const GgufFile gguf(ggufPath);
  std::vector<const GgufTensor*> sources;
  std::set<std::string> names;
  for (const GgufImportSpec& spec : tensors) {
    const std::string what = ggufPath + ": tensor \"" + spec.tensor + "\"";
    const GgufTensor* t = gguf.find(spec.tensor);
    if (!t) throw std::runtime_error(what + ": not in the file");
    if (spec.dtype == DType::I32) throw std::runtime_error(what + ": output dtype must be F32, F16 or BF16");
    if (!names.insert(spec.name).second) throw std::runtime_error(outPath + ": tensor \"" + spec.name + "\" is written twice");
    const uint64_t rows = t->dims.size() == 1 ? 1 : static_cast<uint64_t>(t->shape()[0]);
    if (spec.transpose && (t->dims.size() != 2 || spec.unpermuteHeads > 0)) {
      throw std::runtime_error(what + ": only a 2-D tensor without a rope permutation can be transposed, not " +
                               shapeString(t->shape()));
    }
    if (spec.unpermuteHeads > 0 && (t->dims.size() != 2 || rows % (2ull * spec.unpermuteHeads) != 0)) {
      throw std::runtime_error(what + ": cannot undo the rope permutation of " + shapeString(t->shape()) + " for " +
                               std::to_string(spec.unpermuteHeads) + " heads");
    }
    sources.push_back(t);
  }

  // The safetensors header, as safetensors_writer.cpp lays it out (data region on a 64-byte boundary).
  std::string header = "{";
  bool first = true;
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    for (const auto& kv : metadata) {
      if (!first) header += ",";
      first = false;
      header += jsonQuote(kv.first) + ":" + jsonQuote(kv.second);
    }
    header += "}";
    first = false;
  }
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    uint64_t elements = 0;
    shapeElements(sources[i]->dims, &elements);
    const uint64_t bytes = elements * dtypeSize(tensors[i].dtype);
    if (!first) header += ",";
    first = false;
    std::vector<int64_t> shape = sources[i]->shape();
    if (tensors[i].transpose) std::swap(shape[0], shape[1]);
    header += jsonQuote(tensors[i].name) + ":{\"dtype\":\"" + safetensorsCode(tensors[i].dtype) + "\",\"shape\":" +
              shapeString(shape) + ",\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + bytes) + "]}";
    offset += bytes;
  }
  header += "}";
  while ((8 + header.size()) % 64 != 0) header += ' ';

  AtomicFileWriter out(outPath);
  uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));
  out.write(length, 8);
  out.write(header.data(), header.size());
  std::vector<float> row;
  std::vector<uint8_t> cast;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const GgufImportSpec& spec = tensors[i];
    const GgufTensor& t = *sources[i];
    const GgmlTypeTraits& traits = *ggmlTypeTraits(t.type);
    const uint64_t rowElements = static_cast<uint64_t>(t.dims[0]);
    uint64_t elements = 0;
    shapeElements(t.dims, &elements);
    const uint64_t rows = elements / rowElements;
    const uint64_t rowBytes = rowElements / traits.blockElements * traits.blockBytes;
    row.resize(rowElements);
    cast.resize(rowElements * dtypeSize(spec.dtype));
    if (spec.transpose) {
      // The whole matrix as float32 (the largest GPT-2 matrix, 4 x hidden x hidden, is what a float32
      // checkpoint holds anyway), then written column by column.
      std::vector<float> all(static_cast<size_t>(elements));
      for (uint64_t r = 0; r < rows; ++r) {
        dequantizeRow(static_cast<GgmlType>(t.type), t.data + r * rowBytes, rowElements, all.data() + r * rowElements);
      }
      std::vector<float> column(static_cast<size_t>(rows));
      cast.resize(rows * dtypeSize(spec.dtype));
      for (uint64_t c = 0; c < rowElements; ++c) {
        for (uint64_t r = 0; r < rows; ++r) column[r] = all[r * rowElements + c] + spec.valueOffset;
        if (rejectNonFinite) {
          for (uint64_t r = 0; r < rows; ++r) {
            if (!std::isfinite(column[r])) {
              throw std::runtime_error(ggufPath + ": tensor \"" + t.name + "\" holds " +
                                       (std::isnan(column[r]) ? "NaN" : "an infinite value") + " at element " +
                                       std::to_string(r * rowElements + c) + " (a model with non-finite weights generates garbage)");
            }
          }
        }
        castFromF32(column.data(), rows, spec.dtype, cast.data());
        out.write(cast.data(), cast.size());
      }
      continue;
    }
    for (uint64_t r = 0; r < rows; ++r) {
      const uint64_t from = spec.unpermuteHeads ? ropePermutedRow(r, rows, spec.unpermuteHeads, true) : r;
      dequantizeRow(static_cast<GgmlType>(t.type), t.data + from * rowBytes, rowElements, row.data());
      if (spec.valueOffset != 0.0f) {
        for (float& v : row) v += spec.valueOffset;
      }
      if (rejectNonFinite) {
        for (uint64_t j = 0; j < rowElements; ++j) {
          if (!std::isfinite(row[j])) {
            throw std::runtime_error(ggufPath + ": tensor \"" + t.name + "\" holds " +
                                     (std::isnan(row[j]) ? "NaN" : "an infinite value") + " at element " +
                                     std::to_string(from * rowElements + j) +
                                     " (a model with non-finite weights generates garbage)");
          }
        }
      }
      castFromF32(row.data(), rowElements, spec.dtype, cast.data());
      out.write(cast.data(), cast.size());
    }
  }
  out.commit();
}

}  // namespace kiln
