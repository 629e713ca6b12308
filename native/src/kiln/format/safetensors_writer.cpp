#include "kiln/format/safetensors_writer.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <stdexcept>

#include "kiln/format/atomic_file.h"
#include "kiln/format/describe.h"
#include "kiln/format/json.h"

namespace kiln {

namespace {

// Elements converted per chunk: bounds the scratch memory whatever the tensor size.
constexpr size_t kChunkElements = 1 << 14;

bool sourceDType(const std::string& code, DType* out) {
  if (code == "F32") *out = DType::F32;
  else if (code == "F16") *out = DType::F16;
  else if (code == "BF16") *out = DType::BF16;
  else return false;
  return true;
}

const char* safetensorsCode(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I32: return "I32";
    case DType::I8: return "I8";
    case DType::F8E4M3: return "F8_E4M3";
    case DType::I4: break;  // engine-only (dtype.h): never in a safetensors file
    case DType::Q8_0: break;  // an engine type only
  }
  return "?";
}

// Index of the first NaN or infinite element of n elements of type t at data (unaligned), or -1.
int64_t firstNonFinite(const uint8_t* data, size_t n, DType t) {
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(loadAsF32(data, t, i))) return static_cast<int64_t>(i);
  }
  return -1;
}

std::string describeValue(float v) { return std::isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity"; }

}  // namespace

struct TensorGatherer::Plan {
  const SafetensorsTensor* tensor = nullptr;
  DType dtype = DType::F32;
  bool transpose = false;
  uint64_t cols = 0;       // transposed only: columns of the source as stored (its dimension 1)
  uint64_t outCols = 0;    // transposed only: columns after the transpose (the source's dimension 0)
  uint64_t first = 0;      // first element taken, in the (transposed) source's row-major order
  uint64_t count = 0;      // elements taken
};

void castFromF32(const float* src, size_t n, DType out, void* dst) {
  switch (out) {
    case DType::F32:
      std::copy(src, src + n, static_cast<float*>(dst));
      return;
    case DType::F16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = f32ToF16(src[i]);
      return;
    }
    case DType::BF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = f32ToBf16(src[i]);
      return;
    }
    case DType::I32:
    case DType::I8:      // int8 needs scales: quantizeRowsInt8 (engine_file.cpp)
    case DType::F8E4M3:  // so does FP8: quantizeTensorFp8
    case DType::I4:      // and int4: quantizeGroupsInt4
    case DType::Q8_0:    // and Q8_0 blocks: quantizeRowsQ8_0
      break;
  }
  throw std::logic_error("castFromF32: unsupported output dtype");
}

const SafetensorsFile& TensorGatherer::open(const std::string& path) {
  auto it = files_.find(path);
  if (it != files_.end()) return *it->second;
  auto file = std::make_unique<SafetensorsFile>(path);
  const SafetensorsFile& ref = *file;
  files_.emplace(path, std::move(file));
  return ref;
}

TensorGatherer::Plan TensorGatherer::plan(const std::string& context, const TensorWriteSpec& spec,
                                          const TensorSourceSpec& src) {
  const std::string t = context + ": tensor \"" + spec.name + "\": source " + src.file + " \"" + src.tensor + "\": ";
  const SafetensorsFile& file = open(src.file);
  Plan p;
  p.tensor = file.find(src.tensor);
  if (!p.tensor) throw std::runtime_error(t + "no such tensor in the file");
  if (!sourceDType(p.tensor->dtype, &p.dtype)) {
    throw std::runtime_error(t + "dtype " + p.tensor->dtype + " cannot be converted (only F32, F16 and BF16)");
  }
  std::vector<int64_t> shape = p.tensor->shape;
  if (src.transpose) {
    if (shape.size() != 2) {
      throw std::runtime_error(t + "transpose needs a 2-D tensor, this one has shape " + shapeString(shape));
    }
    p.transpose = true;
    p.cols = static_cast<uint64_t>(shape[1]);
    p.outCols = static_cast<uint64_t>(shape[0]);
    std::swap(shape[0], shape[1]);
  }
  // A 0-D tensor is one row of one element; otherwise a row is everything after dimension 0.
  const int64_t rows = shape.empty() ? 1 : shape[0];
  uint64_t rowElems = 1;
  if (shape.size() > 1) shapeElements(std::vector<int64_t>(shape.begin() + 1, shape.end()), &rowElems);
  const int64_t count = src.rowCount < 0 ? rows - src.rowStart : src.rowCount;
  if (src.rowStart < 0 || src.rowStart > rows || count < 0 || count > rows - src.rowStart) {
    throw std::runtime_error(t + "rows [" + std::to_string(src.rowStart) + ", " +
                             std::to_string(src.rowStart + count) + ") are outside its " + std::to_string(rows) +
                             " rows (shape " + shapeString(shape) + (src.transpose ? " after transpose)" : ")"));
  }
  p.first = static_cast<uint64_t>(src.rowStart) * rowElems;
  p.count = static_cast<uint64_t>(count) * rowElems;
  return p;
}

void TensorGatherer::check(const std::string& context, const TensorWriteSpec& spec) {
  const std::string t = context + ": tensor \"" + spec.name + "\": ";
  if (spec.dtype != DType::F32 && spec.dtype != DType::F16 && spec.dtype != DType::BF16) {
    throw std::runtime_error(t + "dtype " + dtypeName(spec.dtype) + " cannot be written");
  }
  uint64_t expected;
  if (!shapeElements(spec.shape, &expected)) {
    throw std::runtime_error(t + "shape " + shapeString(spec.shape) + " is invalid (negative or too large)");
  }
  if (spec.sources.empty()) throw std::runtime_error(t + "no sources");
  uint64_t total = 0;
  std::string detail;
  for (const auto& src : spec.sources) {
    const Plan p = plan(context, spec, src);
    total += p.count;
    if (!detail.empty()) detail += " + ";
    detail += std::to_string(p.count) + " from " + src.file + " \"" + src.tensor + "\"";
  }
  if (total != expected) {
    throw std::runtime_error(t + "shape " + shapeString(spec.shape) + " has " + std::to_string(expected) +
                             " elements but its sources give " + std::to_string(total) + " (" + detail + ")");
  }
}

void TensorGatherer::gather(const std::string& context, const TensorWriteSpec& spec,
                            const std::function<void(const void*, size_t)>& sink) {
  std::vector<float> scratch(kChunkElements);
  std::vector<uint8_t> out(kChunkElements * dtypeSize(spec.dtype));
  const size_t outSize = dtypeSize(spec.dtype);
  for (const auto& src : spec.sources) {
    const Plan p = plan(context, spec, src);
    const size_t inSize = dtypeSize(p.dtype);
    auto nonFinite = [&](uint64_t element, float value) {
      return std::runtime_error(context + ": tensor \"" + spec.name + "\": source " + src.file + " \"" + src.tensor +
                                "\" holds " + describeValue(value) + " (element " + std::to_string(element) +
                                "): refusing non-finite weights (a model with them generates garbage); " +
                                "convert with allowNonFinite (kiln convert --allow-non-finite) to keep them");
    };
    if (!p.transpose && p.dtype == spec.dtype) {
      // Same type, contiguous rows: the bytes go straight from the map to the file.
      const uint8_t* begin = p.tensor->data + p.first * inSize;
      uint64_t left = p.count * inSize;
      uint64_t element = p.first;
      while (left > 0) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(left, 1 << 24));
        if (rejectNonFinite) {
          const int64_t bad = firstNonFinite(begin, n / inSize, p.dtype);
          if (bad >= 0) throw nonFinite(element + static_cast<uint64_t>(bad), loadAsF32(begin, p.dtype, static_cast<size_t>(bad)));
        }
        sink(begin, n);
        begin += n;
        left -= n;
        element += n / inSize;
      }
      continue;
    }
    for (uint64_t done = 0; done < p.count;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunkElements, p.count - done));
      if (p.transpose) {
        // Element (i, j) of the transposed tensor is element (j, i) of the stored one.
        uint64_t i = (p.first + done) / p.outCols, j = (p.first + done) % p.outCols;
        for (size_t k = 0; k < n; ++k) {
          scratch[k] = loadAsF32(p.tensor->data, p.dtype, j * p.cols + i);
          if (++j == p.outCols) {
            j = 0;
            ++i;
          }
        }
      } else {
        for (size_t k = 0; k < n; ++k) scratch[k] = loadAsF32(p.tensor->data, p.dtype, p.first + done + k);
      }
      if (rejectNonFinite) {
        for (size_t k = 0; k < n; ++k) {
          // Transposed: the element index is in the transposed order, as the tensor is written.
          if (!std::isfinite(scratch[k])) throw nonFinite(p.first + done + k, scratch[k]);
        }
      }
      castFromF32(scratch.data(), n, spec.dtype, out.data());
      sink(out.data(), n * outSize);
      done += n;
    }
  }
}

void writeSafetensors(const std::string& path, const std::map<std::string, std::string>& metadata,
                      const std::vector<TensorWriteSpec>& tensors, bool rejectNonFinite) {
  // Everything is checked before the first byte is written (non-finite values as they are read: the
  // atomic file is then removed, nothing is left at `path`).
  TensorGatherer gatherer;
  gatherer.rejectNonFinite = rejectNonFinite;
  std::set<std::string> names;
  std::vector<uint64_t> sizes;
  for (const auto& spec : tensors) {
    if (spec.name.empty()) throw std::runtime_error(path + ": a tensor has an empty name");
    if (spec.name == "__metadata__") throw std::runtime_error(path + ": \"__metadata__\" is not a tensor name");
    if (!names.insert(spec.name).second) {
      throw std::runtime_error(path + ": tensor \"" + spec.name + "\" is listed twice");
    }
    gatherer.check(path, spec);
    uint64_t elements = 0;
    shapeElements(spec.shape, &elements);
    sizes.push_back(elements * dtypeSize(spec.dtype));
  }

  // Tensors are contiguous, as the reference implementation (huggingface/safetensors) requires: it
  // rejects files with gaps between tensors.
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& kv : metadata) {
      if (!first) header += ",";
      first = false;
      header += jsonQuote(kv.first) + ":" + jsonQuote(kv.second);
    }
    header += "}";
  }
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (i > 0 || !metadata.empty()) header += ",";
    std::string shape = "[";
    for (size_t d = 0; d < tensors[i].shape.size(); ++d) {
      if (d) shape += ",";
      shape += std::to_string(tensors[i].shape[d]);
    }
    shape += "]";
    header += jsonQuote(tensors[i].name) + ":{\"dtype\":\"" + safetensorsCode(tensors[i].dtype) +
              "\",\"shape\":" + shape + ",\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + sizes[i]) + "]}";
    offset += sizes[i];
  }
  header += "}";
  // Trailing spaces are valid JSON whitespace; they start the data region on a 64-byte boundary so
  // float tensors can be read in place.
  while ((8 + header.size()) % 64 != 0) header += ' ';

  AtomicFileWriter file(path);
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));
  file.write(len, 8);
  file.write(header.data(), header.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t before = file.bytesWritten();
    gatherer.gather(path, tensors[i], [&](const void* data, size_t n) { file.write(data, n); });
    if (file.bytesWritten() - before != sizes[i]) {
      throw std::logic_error(path + ": tensor \"" + tensors[i].name + "\": wrote an unexpected number of bytes");
    }
  }
  file.commit();
}

}  // namespace kiln
