#include "kiln/format/safetensors.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "kiln/format/describe.h"
#include "kiln/format/json.h"

namespace kiln {

namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // as the reference implementation

// Caps on what one header may declare, so that the memory a header costs (its parsed form, and the
// tensor list and metadata handed to JavaScript) stays proportional to a real file's: a 57 MB header of
// 4.19M "__metadata__" entries took 35 s and 2.38 GB to convert, 590k empty tensors 971 MB before
// their error (issue 16). Real checkpoints hold at most a few thousand tensors per file (the largest
// MoE checkpoints shard at ~10k) and a handful of metadata strings.
constexpr size_t kMaxTensors = 1 << 16;
constexpr size_t kMaxMetadataEntries = 1 << 12;
constexpr size_t kMaxDims = 16;
// A tensor entry is at most 4 members, a dtype, kMaxDims dims and 2 offsets: the parse stops as soon
// as the document holds more elements than kMaxTensors such entries could (~100 MB of parsed JSON).
constexpr size_t kMaxHeaderElements = kMaxTensors * (4 + kMaxDims + 2) / 2 + kMaxMetadataEntries + 1;

uint64_t readU64LE(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// A non-negative integer a JavaScript number holds exactly.
bool asIndex(const Json& v, uint64_t* out) {
  if (!v.isNumber()) return false;
  const double d = v.asNumber();
  if (!(d >= 0) || d > 9007199254740992.0 || d != static_cast<double>(static_cast<uint64_t>(d))) return false;
  *out = static_cast<uint64_t>(d);
  return true;
}

}  // namespace

size_t safetensorsDTypeSize(const std::string& code) {
  static const std::pair<const char*, size_t> kSizes[] = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2}, {"U16", 2}, {"F16", 2},
      {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4},     {"I64", 8},     {"U64", 8}, {"F64", 8},
  };
  for (const auto& e : kSizes) {
    if (code == e.first) return e.second;
  }
  return 0;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : map_(std::make_unique<MappedFile>(path)) {
  const size_t size = map_->size();
  const std::string where = path + ": ";
  if (size < 8) {
    throw std::runtime_error(where + "file is " + std::to_string(size) +
                             " bytes, too short for a safetensors header length (8 bytes)");
  }
  const uint64_t headerLen = readU64LE(map_->data());
  if (headerLen > size - 8) {
    throw std::runtime_error(where + "header length " + std::to_string(headerLen) +
                             " is past the end of the file (" + std::to_string(size) + " bytes)");
  }
  if (headerLen > kMaxHeaderBytes) {
    throw std::runtime_error(where + "header length " + std::to_string(headerLen) + " exceeds the limit of " +
                             std::to_string(kMaxHeaderBytes) + " bytes");
  }
  const uint64_t dataStart = 8 + headerLen;
  const uint64_t dataSize = size - dataStart;

  // A safetensors header is three levels deep at most; the tight limit stops JSON bombs early.
  JsonLimits limits;
  limits.maxDepth = 8;
  limits.maxContainerSize = kMaxTensors + 1;  // the tensors and "__metadata__"
  limits.maxElements = kMaxHeaderElements;
  Json header;
  try {
    header = Json::parse(reinterpret_cast<const char*>(map_->data() + 8), headerLen, limits);
  } catch (const JsonError& e) {
    throw std::runtime_error(where + "invalid header JSON: " + e.what() + " (header is " +
                             std::to_string(headerLen) + " bytes)");
  }
  if (!header.isObject()) throw std::runtime_error(where + "header JSON is not an object");
  const size_t numEntries = header.members().size() - (header.find("__metadata__") ? 1 : 0);
  if (numEntries > kMaxTensors) {
    throw std::runtime_error(where + "header lists " + std::to_string(numEntries) + " tensors, more than the " +
                             std::to_string(kMaxTensors) + " one file may hold");
  }

  struct Range {
    uint64_t begin, end;
  };
  std::vector<Range> ranges;
  for (const auto& member : header.members()) {
    const std::string& name = member.first;
    const Json& entry = member.second;
    if (name == "__metadata__") {
      if (!entry.isObject()) throw std::runtime_error(where + "__metadata__ is not an object of strings");
      if (entry.members().size() > kMaxMetadataEntries) {
        throw std::runtime_error(where + "__metadata__ has " + std::to_string(entry.members().size()) +
                                 " entries, more than the " + std::to_string(kMaxMetadataEntries) + " allowed");
      }
      for (const auto& kv : entry.members()) {
        if (!kv.second.isString()) {
          throw std::runtime_error(where + "__metadata__ \"" + kv.first + "\" is not a string");
        }
        metadata_[kv.first] = kv.second.asString();
      }
      continue;
    }
    const std::string t = where + "tensor \"" + name + "\": ";
    if (!entry.isObject()) throw std::runtime_error(t + "entry is not an object");
    for (const auto& kv : entry.members()) {
      if (kv.first != "dtype" && kv.first != "shape" && kv.first != "data_offsets") {
        throw std::runtime_error(t + "unexpected key \"" + kv.first + "\"");
      }
    }
    const Json* dtype = entry.find("dtype");
    const Json* shape = entry.find("shape");
    const Json* offsets = entry.find("data_offsets");
    if (!dtype || !dtype->isString()) throw std::runtime_error(t + "\"dtype\" is missing or not a string");
    if (!shape || !shape->isArray()) throw std::runtime_error(t + "\"shape\" is missing or not an array");
    if (!offsets || !offsets->isArray()) {
      throw std::runtime_error(t + "\"data_offsets\" is missing or not an array");
    }

    SafetensorsTensor tensor;
    tensor.name = name;
    tensor.dtype = dtype->asString();
    const size_t elemSize = safetensorsDTypeSize(tensor.dtype);
    if (elemSize == 0) throw std::runtime_error(t + "unknown dtype \"" + tensor.dtype + "\"");
    if (shape->items().size() > kMaxDims) {
      throw std::runtime_error(t + "shape has " + std::to_string(shape->items().size()) + " dimensions, more than the " +
                               std::to_string(kMaxDims) + " allowed");
    }
    for (size_t i = 0; i < shape->items().size(); ++i) {
      uint64_t d;
      if (!asIndex(shape->items()[i], &d)) {
        throw std::runtime_error(t + "shape dimension " + std::to_string(i) + " is not a non-negative integer");
      }
      tensor.shape.push_back(static_cast<int64_t>(d));
    }
    uint64_t elements, bytes;
    if (!shapeElements(tensor.shape, &elements) || __builtin_mul_overflow(elements, elemSize, &bytes)) {
      throw std::runtime_error(t + "shape " + shapeString(tensor.shape) + " has too many elements");
    }

    uint64_t begin, end;
    if (offsets->items().size() != 2 || !asIndex(offsets->items()[0], &begin) ||
        !asIndex(offsets->items()[1], &end)) {
      throw std::runtime_error(t + "data_offsets is not a pair of non-negative integers");
    }
    const std::string pair = "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
    if (begin > end) throw std::runtime_error(t + "data_offsets " + pair + " begin after end");
    if (end > dataSize) {
      throw std::runtime_error(t + "data_offsets " + pair + " end past the data region (" +
                               std::to_string(dataSize) + " bytes)");
    }
    if (end - begin != bytes) {
      throw std::runtime_error(t + "dtype " + tensor.dtype + " shape " + shapeString(tensor.shape) + " needs " +
                               std::to_string(bytes) + " bytes but data_offsets " + pair + " span " +
                               std::to_string(end - begin));
    }
    tensor.byteOffset = dataStart + begin;
    tensor.byteLength = bytes;
    tensor.data = map_->data() + tensor.byteOffset;
    tensors_.push_back(std::move(tensor));
  }

  std::sort(tensors_.begin(), tensors_.end(), [](const SafetensorsTensor& a, const SafetensorsTensor& b) {
    return a.byteOffset != b.byteOffset ? a.byteOffset < b.byteOffset : a.byteLength < b.byteLength;
  });
  // Sorted by start, two non-empty tensors overlap iff one starts before the furthest end seen so far.
  // Empty tensors hold no bytes and cannot overlap anything.
  const SafetensorsTensor* furthest = nullptr;
  for (const auto& t : tensors_) {
    if (t.byteLength == 0) continue;
    if (furthest && t.byteOffset < furthest->byteOffset + furthest->byteLength) {
      auto rel = [&](const SafetensorsTensor& x) {
        return "[" + std::to_string(x.byteOffset - dataStart) + ", " +
               std::to_string(x.byteOffset - dataStart + x.byteLength) + "]";
      };
      throw std::runtime_error(where + "tensors \"" + furthest->name + "\" data_offsets " + rel(*furthest) +
                               " and \"" + t.name + "\" data_offsets " + rel(t) + " overlap");
    }
    if (!furthest || t.byteOffset + t.byteLength > furthest->byteOffset + furthest->byteLength) furthest = &t;
  }
  for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
}

const SafetensorsTensor* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace kiln
