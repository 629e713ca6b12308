#include "kiln/format/gguf.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <stdexcept>

#include "kiln/format/describe.h"

namespace kiln {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32

// Caps on what the header may declare. Each count is also checked against the bytes left in the file
// (times the smallest encoding of one item) before anything is reserved, so the memory a file costs stays
// proportional to its size; the fixed caps bound what a large file can make us hold.
// - Tensors: a count of 2^60 would make `reserve` throw bad_alloc or swap; real files hold at most a few
//   thousand (the largest MoE GGUFs ~ 10^4).
constexpr uint64_t kMaxTensors = 1 << 20;
// - Metadata entries: the same attack through the key/value count; real files hold ~ 50.
constexpr uint64_t kMaxMetadataEntries = 1 << 16;
// - Array items: token lists are the largest arrays (256k vocabularies, ~ 300k merges); a count of 2^62
//   must not allocate. Items summed over all arrays, so many mid-size arrays cannot add up either.
constexpr uint64_t kMaxArrayItems = 1 << 24;
constexpr uint64_t kMaxTotalArrayItems = 1 << 25;
// - String lengths: a length of 2^63 must be refused before any copy, not wrap an offset. Keys and
//   tensor names are short; chat templates, the longest strings, are tens of kilobytes.
constexpr uint64_t kMaxKeyBytes = 1 << 16;
constexpr uint64_t kMaxStringBytes = 16 << 20;
// - Dimensions: ggml's GGML_MAX_DIMS.
constexpr uint32_t kMaxDims = 4;
// - Alignment: a power of two; ggml writes 32, a huge one would push the data region past any file.
constexpr uint64_t kMaxAlignment = 1 << 16;

// Reads little-endian values at a cursor that can never pass the end of the map: every read checks the
// bytes left first and throws naming the file and what was being read.
class Cursor {
 public:
  Cursor(const std::string& path, const uint8_t* data, size_t size) : path_(path), data_(data), size_(size) {}

  size_t offset() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }

  [[noreturn]] void fail(const std::string& what) const { throw std::runtime_error(path_ + ": " + what); }

  void need(uint64_t n, const std::string& what) const {
    if (n > left()) {
      fail("truncated: " + what + " needs " + std::to_string(n) + " bytes at offset " + std::to_string(pos_) +
           ", the file has " + std::to_string(left()) + " left");
    }
  }
  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));  // unaligned-safe; x86-64 and aarch64 are little-endian
    pos_ += sizeof(T);
    return v;
  }
  std::string string(const std::string& what, uint64_t cap) {
    const uint64_t n = read<uint64_t>(what + " length");
    if (n > cap) fail(what + ": string length " + std::to_string(n) + " is above the " + std::to_string(cap) + "-byte limit");
    need(n, what);
    std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(n));
    pos_ += n;
    return s;
  }

 private:
  const std::string& path_;
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Bytes the smallest encoding of one value of this type takes (the lower bound behind the count checks).
uint64_t minValueBytes(GgufValueType t) {
  switch (t) {
    case GgufValueType::UINT8: case GgufValueType::INT8: case GgufValueType::BOOL: return 1;
    case GgufValueType::UINT16: case GgufValueType::INT16: return 2;
    case GgufValueType::UINT32: case GgufValueType::INT32: case GgufValueType::FLOAT32: return 4;
    case GgufValueType::STRING: case GgufValueType::UINT64: case GgufValueType::INT64: case GgufValueType::FLOAT64: return 8;
    case GgufValueType::ARRAY: return 12;
  }
  return 1;
}

bool knownValueType(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::FLOAT64); }

double readNumber(Cursor& c, GgufValueType t, const std::string& what) {
  switch (t) {
    case GgufValueType::UINT8: return c.read<uint8_t>(what);
    case GgufValueType::INT8: return c.read<int8_t>(what);
    case GgufValueType::UINT16: return c.read<uint16_t>(what);
    case GgufValueType::INT16: return c.read<int16_t>(what);
    case GgufValueType::UINT32: return c.read<uint32_t>(what);
    case GgufValueType::INT32: return c.read<int32_t>(what);
    case GgufValueType::FLOAT32: return c.read<float>(what);
    case GgufValueType::FLOAT64: return c.read<double>(what);
    case GgufValueType::BOOL: {
      const uint8_t b = c.read<uint8_t>(what);
      if (b > 1) c.fail(what + ": bool value " + std::to_string(b) + " is neither 0 nor 1");
      return b;
    }
    case GgufValueType::UINT64: {
      const uint64_t v = c.read<uint64_t>(what);
      if (v > (1ull << 53)) c.fail(what + ": " + std::to_string(v) + " is above 2^53");
      return static_cast<double>(v);
    }
    case GgufValueType::INT64: {
      const int64_t v = c.read<int64_t>(what);
      if (v > (1ll << 53) || v < -(1ll << 53)) c.fail(what + ": " + std::to_string(v) + " is outside +-2^53");
      return static_cast<double>(v);
    }
    default: break;
  }
  c.fail(what + ": not a number type");
}

}  // namespace

GgufFile::GgufFile(const std::string& path) : map_(std::make_unique<MappedFile>(path)) {
  Cursor c(map_->path(), map_->data(), map_->size());
  if (map_->size() < 4 || c.read<uint32_t>("magic") != kMagic) c.fail("not a GGUF file (the magic bytes are not \"GGUF\")");
  version_ = c.read<uint32_t>("version");
  // Version 1 used 32-bit counts and lengths (and is no longer written by anything); 3 added big-endian
  // files, which announce themselves by a byte-swapped version.
  if (version_ != 2 && version_ != 3) c.fail("version " + std::to_string(version_) + " is not supported (2 or 3)");
  const uint64_t tensorCount = c.read<uint64_t>("tensor_count");
  const uint64_t kvCount = c.read<uint64_t>("metadata_kv_count");
  // Smallest metadata entry: an empty key (8), a type (4), a u8 value (1). Smallest tensor info: an empty
  // name (8), n_dims (4), one dim (8), type (4), offset (8).
  if (kvCount > kMaxMetadataEntries || kvCount > c.left() / 13) {
    c.fail("metadata_kv_count " + std::to_string(kvCount) + " is past the end of the file or above the limit of " +
           std::to_string(kMaxMetadataEntries));
  }
  if (tensorCount > kMaxTensors || tensorCount > c.left() / 32) {
    c.fail("tensor_count " + std::to_string(tensorCount) + " is past the end of the file or above the limit of " +
           std::to_string(kMaxTensors));
  }

  uint64_t totalArrayItems = 0;
  std::set<std::string> keys;
  metadata_.reserve(static_cast<size_t>(kvCount));
  for (uint64_t i = 0; i < kvCount; ++i) {
    std::string key = c.string("metadata key " + std::to_string(i), kMaxKeyBytes);
    const std::string what = "metadata \"" + key + "\"";
    if (!keys.insert(key).second) c.fail(what + ": the key appears twice");
    GgufValue value;
    const uint32_t type = c.read<uint32_t>(what + " type");
    if (!knownValueType(type)) c.fail(what + ": unknown value type " + std::to_string(type));
    value.type = static_cast<GgufValueType>(type);
    if (value.type == GgufValueType::STRING) {
      value.string = c.string(what, kMaxStringBytes);
    } else if (value.type == GgufValueType::ARRAY) {
      const uint32_t itemType = c.read<uint32_t>(what + " item type");
      if (!knownValueType(itemType)) c.fail(what + ": unknown array item type " + std::to_string(itemType));
      // Nested arrays: gguf.md allows them, but no model file uses them and llama.cpp refuses them too.
      if (itemType == static_cast<uint32_t>(GgufValueType::ARRAY)) c.fail(what + ": nested arrays are not supported");
      value.itemType = static_cast<GgufValueType>(itemType);
      const uint64_t n = c.read<uint64_t>(what + " item count");
      if (n > kMaxArrayItems || n > c.left() / minValueBytes(value.itemType) ||
          totalArrayItems + n > kMaxTotalArrayItems) {
        c.fail(what + ": array of " + std::to_string(n) + " items is past the end of the file or above the limit of " +
               std::to_string(kMaxArrayItems) + " items");
      }
      totalArrayItems += n;
      if (value.itemType == GgufValueType::STRING) {
        value.strings.reserve(static_cast<size_t>(n));
        for (uint64_t j = 0; j < n; ++j) value.strings.push_back(c.string(what + "[" + std::to_string(j) + "]", kMaxStringBytes));
      } else {
        value.numbers.reserve(static_cast<size_t>(n));
        for (uint64_t j = 0; j < n; ++j) value.numbers.push_back(readNumber(c, value.itemType, what + "[" + std::to_string(j) + "]"));
      }
    } else {
      value.number = readNumber(c, value.type, what);
    }
    if (key == "general.alignment") {
      if (value.type != GgufValueType::UINT32 || value.number == 0 || value.number > kMaxAlignment ||
          (static_cast<uint64_t>(value.number) & (static_cast<uint64_t>(value.number) - 1)) != 0) {
        c.fail(what + ": must be a UINT32 power of two up to " + std::to_string(kMaxAlignment));
      }
      alignment_ = static_cast<uint64_t>(value.number);
    }
    metadata_.emplace_back(std::move(key), std::move(value));
  }

  tensors_.reserve(static_cast<size_t>(tensorCount));
  for (uint64_t i = 0; i < tensorCount; ++i) {
    GgufTensor t;
    t.name = c.string("tensor " + std::to_string(i) + " name", kMaxKeyBytes);
    const std::string what = "tensor \"" + t.name + "\"";
    if (index_.count(t.name)) c.fail(what + ": the name appears twice");
    const uint32_t nDims = c.read<uint32_t>(what + " n_dims");
    if (nDims == 0 || nDims > kMaxDims) c.fail(what + ": n_dims " + std::to_string(nDims) + " is not in [1, 4]");
    for (uint32_t d = 0; d < nDims; ++d) {
      const uint64_t n = c.read<uint64_t>(what + " ne[" + std::to_string(d) + "]");
      if (n == 0 || n > (1ull << 53)) c.fail(what + ": ne[" + std::to_string(d) + "] = " + std::to_string(n) + " is not in [1, 2^53]");
      t.dims.push_back(static_cast<int64_t>(n));
    }
    t.type = c.read<uint32_t>(what + " type");
    const GgmlTypeTraits* traits = ggmlTypeTraits(t.type);
    if (!traits) {
      c.fail(what + ": tensor type " + std::to_string(t.type) +
             " is not supported (Kiln reads F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K)");
    }
    uint64_t elements = 0;
    if (!shapeElements(t.dims, &elements)) c.fail(what + ": element count of " + shapeString(t.shape()) + " overflows");
    if (t.dims[0] % traits->blockElements != 0) {
      c.fail(what + ": rows of " + std::to_string(t.dims[0]) + " elements are not whole " + traits->name + " blocks of " +
             std::to_string(traits->blockElements));
    }
    t.byteLength = elements / traits->blockElements * traits->blockBytes;
    t.byteOffset = c.read<uint64_t>(what + " offset");  // relative to the data region until checked below
    index_[t.name] = tensors_.size();
    tensors_.push_back(std::move(t));
  }

  const uint64_t dataStart = (c.offset() + alignment_ - 1) / alignment_ * alignment_;
  if (dataStart > map_->size() && !tensors_.empty()) c.fail("truncated: the tensor data region starts past the end of the file");
  // Data ranges: aligned, inside the file, not overlapping (checked on the ranges sorted by offset).
  std::vector<std::pair<uint64_t, size_t>> order;
  order.reserve(tensors_.size());
  for (size_t i = 0; i < tensors_.size(); ++i) {
    GgufTensor& t = tensors_[i];
    const std::string what = "tensor \"" + t.name + "\"";
    if (t.byteOffset % alignment_ != 0) {
      c.fail(what + ": data offset " + std::to_string(t.byteOffset) + " is not a multiple of the alignment " + std::to_string(alignment_));
    }
    const uint64_t relative = t.byteOffset;
    uint64_t end = 0;
    if (__builtin_add_overflow(dataStart, relative, &t.byteOffset) ||
        __builtin_add_overflow(t.byteOffset, t.byteLength, &end) || end > map_->size()) {
      c.fail(what + ": tensor data out of range: offset " + std::to_string(relative) + " + " + std::to_string(t.byteLength) +
             " bytes is past the end of the " + std::to_string(map_->size()) + "-byte file");
    }
    t.data = map_->data() + t.byteOffset;
    order.emplace_back(t.byteOffset, i);
  }
  std::sort(order.begin(), order.end());
  for (size_t k = 1; k < order.size(); ++k) {
    const GgufTensor& prev = tensors_[order[k - 1].second];
    if (prev.byteOffset + prev.byteLength > order[k].first) {
      c.fail("tensor \"" + tensors_[order[k].second].name + "\": data overlaps tensor \"" + prev.name + "\"");
    }
  }
}

const GgufTensor* GgufFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace kiln
