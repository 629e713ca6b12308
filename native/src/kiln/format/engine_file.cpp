#include "kiln/format/engine_file.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

#include "kiln/format/atomic_file.h"
#include "kiln/format/describe.h"
#include "kiln/format/ggml_quants.h"
#include "kiln/format/xxhash.h"

namespace kiln {

namespace {

constexpr uint64_t kPrefixBytes = 24;   // magic, version, flags, header length
constexpr uint64_t kTrailerBytes = 8;   // XXH64
constexpr int64_t kMaxJsSafe = 9007199254740992;  // 2^53: sizes cross into JavaScript as numbers

uint64_t readLE(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void putLE(uint8_t* p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

uint64_t alignUp(uint64_t v) { return (v + kEngineAlignment - 1) / kEngineAlignment * kEngineAlignment; }

// The checks the header's identity fields need, shared by the writer and the loader.
void checkFormatFields(const Json& header, const std::string& where) {
  if (!header.isObject()) throw std::runtime_error(where + "header JSON is not an object");
  const std::string& format = header.string("format", "header");
  if (format != "kiln-engine") throw std::runtime_error(where + "header.format is \"" + format + "\", not \"kiln-engine\"");
  const int64_t version = header.integer("formatVersion", "header", 0, 0xffffffffll);
  if (version != kEngineFormatVersion) {
    throw std::runtime_error(where + "header.formatVersion is " + std::to_string(version) + ", this build reads version " +
                             std::to_string(kEngineFormatVersion));
  }
}

// Parses and checks the `weights` table: every entry complete and consistent, offsets aligned, inside
// `dataSize` bytes, and no two weights sharing a byte. `data` pointers are left null.
std::vector<EngineWeight> parseWeights(const Json& header, uint64_t dataSize, const std::string& where) {
  const Json& table = header.at("weights", "header");
  if (!table.isArray()) throw std::runtime_error(where + "header.weights is not an array");
  std::vector<EngineWeight> weights;
  weights.reserve(table.items().size());
  for (size_t i = 0; i < table.items().size(); ++i) {
    const Json& entry = table.items()[i];
    std::string what = "header.weights[" + std::to_string(i) + "]";
    if (!entry.isObject()) throw std::runtime_error(where + what + " is not an object");
    EngineWeight w;
    w.name = entry.string("name", what);
    what += " \"" + w.name + "\"";
    const std::string& dtype = entry.string("dtype", what);
    if (!parseDTypeName(dtype, &w.dtype) || w.dtype == DType::I32) {
      throw std::runtime_error(where + what + ": unknown weight dtype \"" + dtype + "\"");
    }
    const Json& shape = entry.at("shape", what);
    if (!shape.isArray()) throw std::runtime_error(where + what + ": shape is not an array");
    for (const Json& d : shape.items()) {
      if (!d.isNumber() || d.asNumber() < 0 || d.asNumber() > static_cast<double>(kMaxJsSafe) ||
          d.asNumber() != static_cast<double>(static_cast<int64_t>(d.asNumber()))) {
        throw std::runtime_error(where + what + ": shape dimensions must be non-negative integers");
      }
      w.shape.push_back(static_cast<int64_t>(d.asNumber()));
    }
    w.offset = static_cast<uint64_t>(entry.integer("offset", what, 0, kMaxJsSafe));
    w.byteLength = static_cast<uint64_t>(entry.integer("byteLength", what, 0, kMaxJsSafe));
    uint64_t elements, bytes;
    if (!shapeElements(w.shape, &elements) || __builtin_mul_overflow(elements, dtypeSize(w.dtype), &bytes)) {
      throw std::runtime_error(where + what + ": shape " + shapeString(w.shape) + " has too many elements");
    }
    if (w.dtype == DType::I8) {
      // int8 matrices carry one float32 scale per row after their values (dtype.h).
      if (w.shape.size() != 2) throw std::runtime_error(where + what + ": int8 weights must be 2-D [N, K]");
      bytes += int8ExtraBytes(w.dtype, static_cast<uint64_t>(w.shape[0]));
    }
    if (w.dtype == DType::F8E4M3) {
      // FP8 matrices carry one float32 scale after their codes (dtype.h).
      if (w.shape.size() != 2) throw std::runtime_error(where + what + ": float8_e4m3fn weights must be 2-D [N, K]");
      bytes += fp8ExtraBytes(w.dtype);
    }
    if (w.dtype == DType::I4) {
      // int4 matrices: half a byte per element, then a bfloat16 scale per group of groupSize (dtype.h).
      if (w.shape.size() != 2) throw std::runtime_error(where + what + ": int4 weights must be 2-D [N, K]");
      w.groupSize = entry.integer("groupSize", what, 1, kMaxInt4GroupSize);
      if (w.groupSize % kInt4Block != 0) {
        throw std::runtime_error(where + what + ": groupSize " + std::to_string(w.groupSize) + " is not a multiple of " +
                                 std::to_string(kInt4Block));
      }
      if (w.shape[1] % w.groupSize != 0) {
        throw std::runtime_error(where + what + ": K = " + std::to_string(w.shape[1]) +
                                 " is not a multiple of groupSize " + std::to_string(w.groupSize));
      }
      // elements fit (checked above with 1 byte each), so the int4 size, smaller, does too.
      bytes = int4Bytes(static_cast<uint64_t>(w.shape[0]), static_cast<uint64_t>(w.shape[1]), static_cast<uint64_t>(w.groupSize));
    } else if (entry.find("groupSize")) {
      throw std::runtime_error(where + what + ": groupSize is for int4 weights only");
    }
    if (w.dtype == DType::Q8_0) {
      // Blocks of 32 codes and their float16 scale along each row (dtype.h).
      if (w.shape.size() != 2 || w.shape[1] % kQ8_0BlockElements != 0) {
        throw std::runtime_error(where + what + ": q8_0 weights must be 2-D [N, K] with K a multiple of 32, not " +
                                 shapeString(w.shape));
      }
      // 34 bytes per 32 elements: refuse a shape whose byte count would wrap (a crafted header could
      // otherwise pass a small byteLength for a huge matrix).
      if (elements > UINT64_MAX / kQ8_0BlockBytes) {
        throw std::runtime_error(where + what + ": shape " + shapeString(w.shape) + " has too many elements");
      }
      bytes = q8_0MatrixBytes(static_cast<uint64_t>(w.shape[0]), static_cast<uint64_t>(w.shape[1]));
    }
    if (w.byteLength != bytes) {
      throw std::runtime_error(where + what + ": byteLength " + std::to_string(w.byteLength) + " but " + dtype +
                               " " + shapeString(w.shape) + " needs " + std::to_string(bytes) + " bytes");
    }
    if (w.offset % kEngineAlignment != 0) {
      throw std::runtime_error(where + what + ": offset " + std::to_string(w.offset) + " is not a multiple of " +
                               std::to_string(kEngineAlignment));
    }
    if (w.byteLength > dataSize || w.offset > dataSize - w.byteLength) {
      throw std::runtime_error(where + what + ": bytes [" + std::to_string(w.offset) + ", " +
                               std::to_string(w.offset + w.byteLength) + ") are outside the data region (" +
                               std::to_string(dataSize) + " bytes)");
    }
    weights.push_back(std::move(w));
  }
  std::vector<const EngineWeight*> byOffset;
  for (const auto& w : weights) {
    if (w.byteLength > 0) byOffset.push_back(&w);
  }
  std::sort(byOffset.begin(), byOffset.end(),
            [](const EngineWeight* a, const EngineWeight* b) { return a->offset < b->offset; });
  const EngineWeight* furthest = nullptr;
  for (const EngineWeight* w : byOffset) {
    if (furthest && w->offset < furthest->offset + furthest->byteLength) {
      throw std::runtime_error(where + "weights \"" + furthest->name + "\" [" + std::to_string(furthest->offset) +
                               ", " + std::to_string(furthest->offset + furthest->byteLength) + ") and \"" +
                               w->name + "\" [" + std::to_string(w->offset) + ", " +
                               std::to_string(w->offset + w->byteLength) + ") overlap");
    }
    if (!furthest || w->offset + w->byteLength > furthest->offset + furthest->byteLength) furthest = w;
  }
  return weights;
}

}  // namespace

std::string hex64(uint64_t v) {
  static const char* digits = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4) s[i] = digits[v & 15];
  return s;
}

EngineFile::EngineFile(const std::string& path) : map_(std::make_unique<MappedFile>(path)) {
  const std::string where = path + ": ";
  const uint8_t* base = map_->data();
  const uint64_t size = map_->size();
  if (size < kPrefixBytes + kTrailerBytes) {
    throw std::runtime_error(where + "file is " + std::to_string(size) + " bytes, too short for an engine (at least " +
                             std::to_string(kPrefixBytes + kTrailerBytes) + ")");
  }
  if (std::memcmp(base, kEngineMagic, sizeof kEngineMagic) != 0) {
    throw std::runtime_error(where + "not a Kiln engine (wrong magic; expected \"KILNENG\\0\")");
  }
  const uint32_t version = static_cast<uint32_t>(readLE(base + 8, 4));
  if (version != kEngineFormatVersion) {
    throw std::runtime_error(where + "engine format version " + std::to_string(version) +
                             " is not supported; this build reads version " + std::to_string(kEngineFormatVersion) +
                             " (rebuild the engine with a matching Kiln)");
  }
  const uint32_t flags = static_cast<uint32_t>(readLE(base + 12, 4));
  if (flags != 0) throw std::runtime_error(where + "unknown flags 0x" + hex64(flags).substr(8) + " (expected 0)");
  headerLength_ = readLE(base + 16, 8);
  if (headerLength_ == 0) throw std::runtime_error(where + "header length is 0");
  if (headerLength_ > size - kPrefixBytes - kTrailerBytes) {
    throw std::runtime_error(where + "header length " + std::to_string(headerLength_) +
                             " is past the end of the file (" + std::to_string(size) + " bytes)");
  }
  if (headerLength_ > kEngineMaxHeaderBytes) {
    throw std::runtime_error(where + "header length " + std::to_string(headerLength_) + " exceeds the limit of " +
                             std::to_string(kEngineMaxHeaderBytes) + " bytes");
  }
  const uint64_t dataStart = alignUp(kPrefixBytes + headerLength_);
  if (dataStart > size - kTrailerBytes) {
    throw std::runtime_error(where + "data region would start at byte " + std::to_string(dataStart) +
                             ", past the end of the file (" + std::to_string(size) + " bytes)");
  }

  // The whole file is hashed before any of it is interpreted: a flipped bit anywhere is reported as
  // corruption rather than as whatever structural error it happens to cause.
  checksum_ = readLE(base + size - kTrailerBytes, 8);
  const uint64_t actual = xxh64(base, size - kTrailerBytes);
  if (actual != checksum_) {
    throw std::runtime_error(where + "checksum mismatch: the trailer says " + hex64(checksum_) +
                             " but the contents hash to " + hex64(actual) + " (the file is corrupt or truncated)");
  }

  try {
    header_ = Json::parse(reinterpret_cast<const char*>(base + kPrefixBytes), headerLength_);
  } catch (const JsonError& e) {
    throw std::runtime_error(where + "invalid header JSON: " + e.what());
  }
  try {
    checkFormatFields(header_, where);
    weights_ = parseWeights(header_, size - kTrailerBytes - dataStart, where);
  } catch (const JsonError& e) {
    throw std::runtime_error(where + e.what());
  }
  for (auto& w : weights_) w.data = base + dataStart + w.offset;
}

std::string EngineFile::checksumHex() const { return hex64(checksum_); }

std::string EngineFile::headerText() const {
  return std::string(reinterpret_cast<const char*>(map_->data() + kPrefixBytes), headerLength_);
}

namespace {

// The bfloat16 scale of one int4 group w[0, G) and its squared error. llama.cpp's Q4_0 rule maps the
// element of largest magnitude m to code -8 (scale m / -8), so all 16 codes are in use. Here that rule is
// the middle of a small search: m is mapped to each code position c in [-9, -7] (step 0.2), the codes
// rounded, the least-squares scale for those codes (sum w q / sum q^2) refitted and rounded to
// bfloat16, and the scale with the smallest squared error kept. On scribe-7m this lowers the RMS error
// from 8.6% to 8.1% and the perplexity cost by a fifth (docs/decisions/0014).
uint16_t int4GroupScale(const float* w, int64_t G, float m) {
  const auto codeOf = [](float v, float inv) { return std::max(-8.0f, std::min(7.0f, std::round(v * inv))); };
  uint16_t best = f32ToBf16(m / -8.0f);
  if (m == 0) return best;
  double bestErr = INFINITY;
  for (int step = 0; step <= 10; ++step) {
    const float inv = (-9.0f + 0.2f * static_cast<float>(step)) / m;
    double wq = 0, qq = 0;
    for (int64_t c = 0; c < G; ++c) {
      const float q = codeOf(w[c], inv);
      wq += static_cast<double>(w[c]) * q;
      qq += static_cast<double>(q) * q;
    }
    if (qq == 0) continue;
    const uint16_t bits = f32ToBf16(static_cast<float>(wq / qq));
    const float scale = bf16ToF32(bits);
    if (!(scale != 0) || !std::isfinite(scale)) continue;
    double err = 0;
    for (int64_t c = 0; c < G; ++c) {
      const double e = static_cast<double>(codeOf(w[c], 1.0f / scale)) * scale - w[c];
      err += e * e;
    }
    if (err < bestErr) {
      bestErr = err;
      best = bits;
    }
  }
  return best;
}

}  // namespace

QuantizationError quantizeGroupsInt4(const std::string& name, const float* w, int64_t rows, int64_t cols,
                                     int64_t groupSize, uint8_t* codes, uint16_t* scales) {
  // Symmetric per group (TensorRT-LLM's W4A16 has no zero point either): the scale from int4GroupScale,
  // the codes rounded against the bfloat16 scale itself, so its rounding is absorbed.
  const int64_t groups = cols / groupSize;
  // Per row: squared error, squared reference, largest error relative to the row's largest weight. Kept
  // per row and summed in row order below, so the report does not depend on the thread count.
  std::vector<double> errSq(static_cast<size_t>(rows)), refSq(static_cast<size_t>(rows)), maxRel(static_cast<size_t>(rows));
  const auto quantizeRows = [&](int64_t from, int64_t to) {
    std::vector<int8_t> q(static_cast<size_t>(cols));
    for (int64_t r = from; r < to; ++r) {
      const float* row = w + r * cols;
      float rowMax = 0;
      for (int64_t c = 0; c < cols; ++c) rowMax = std::max(rowMax, std::fabs(row[c]));
      double rowErr = 0, rowRef = 0, rowRel = 0;
      for (int64_t g = 0; g < groups; ++g) {
        const float* group = row + g * groupSize;
        float m = 0;
        for (int64_t c = 0; c < groupSize; ++c) {
          if (std::fabs(group[c]) > std::fabs(m)) m = group[c];
        }
        const uint16_t sbits = int4GroupScale(group, groupSize, m);
        const float scale = bf16ToF32(sbits);
        scales[r * groups + g] = sbits;
        const float inv = scale != 0 ? 1.0f / scale : 0.0f;
        for (int64_t c = g * groupSize; c < (g + 1) * groupSize; ++c) {
          const float v = std::max(-8.0f, std::min(7.0f, std::round(row[c] * inv)));
          q[static_cast<size_t>(c)] = static_cast<int8_t>(v);
          const double err = static_cast<double>(v) * scale - row[c];
          rowErr += err * err;
          rowRef += static_cast<double>(row[c]) * row[c];
          if (rowMax > 0) rowRel = std::max(rowRel, std::fabs(err) / rowMax);
        }
      }
      errSq[static_cast<size_t>(r)] = rowErr;
      refSq[static_cast<size_t>(r)] = rowRef;
      maxRel[static_cast<size_t>(r)] = rowRel;
      uint8_t* out = codes + r * (cols / 2);
      for (int64_t b = 0; b < cols; b += kInt4Block) {
        for (int64_t j = 0; j < kInt4Block / 2; ++j) {
          const uint8_t lo = static_cast<uint8_t>(q[static_cast<size_t>(b + j)] + 8);
          const uint8_t hi = static_cast<uint8_t>(q[static_cast<size_t>(b + j + kInt4Block / 2)] + 8);
          out[b / 2 + j] = static_cast<uint8_t>(lo | (hi << 4));
        }
      }
    }
  };
  // The scale search reads each group 22 times: a 1.1B-parameter model took 3 minutes on one core. Rows
  // are independent, so the matrix is cut into row ranges over the machine's cores (large matrices only).
  const int64_t cores = std::max<int64_t>(1, std::min<int64_t>(32, static_cast<int64_t>(std::thread::hardware_concurrency())));
  const int64_t workers = rows * cols >= (int64_t{1} << 20) ? std::min(cores, rows) : 1;
  std::vector<std::thread> threads;
  for (int64_t t = 1; t < workers; ++t) threads.emplace_back(quantizeRows, rows * t / workers, rows * (t + 1) / workers);
  quantizeRows(0, rows / workers);
  for (std::thread& thread : threads) thread.join();
  double errTotal = 0, refTotal = 0, relMax = 0;
  for (int64_t r = 0; r < rows; ++r) {
    errTotal += errSq[static_cast<size_t>(r)];
    refTotal += refSq[static_cast<size_t>(r)];
    relMax = std::max(relMax, maxRel[static_cast<size_t>(r)]);
  }
  QuantizationError e;
  e.name = name;
  e.maxRelativeError = relMax;
  e.rmsRelativeError = refTotal > 0 ? std::sqrt(errTotal / refTotal) : 0.0;
  return e;
}

QuantizationError quantizeRowsInt8(const std::string& name, const float* w, int64_t rows, int64_t cols, int8_t* q,
                                   float* scales) {
  // Symmetric per row (TensorRT-LLM's W8A16 per-channel): scale = max |w| / 127, q = round(w / scale),
  // halves away from zero. A row of zeros gets scale 0 and codes 0.
  double errSq = 0, refSq = 0, maxRel = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = w + r * cols;
    float amax = 0;
    for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(row[c]));
    const float scale = amax / 127.0f;
    scales[r] = scale;
    const float inv = scale > 0 ? 1.0f / scale : 0.0f;
    for (int64_t c = 0; c < cols; ++c) {
      const float v = std::max(-127.0f, std::min(127.0f, std::round(row[c] * inv)));
      q[r * cols + c] = static_cast<int8_t>(v);
      const double err = static_cast<double>(v) * scale - row[c];
      errSq += err * err;
      refSq += static_cast<double>(row[c]) * row[c];
      // Relative to the row's largest magnitude: an element's own value can be ~0.
      if (amax > 0) maxRel = std::max(maxRel, std::fabs(err) / amax);
    }
  }
  QuantizationError e;
  e.name = name;
  e.maxRelativeError = maxRel;
  e.rmsRelativeError = refSq > 0 ? std::sqrt(errSq / refSq) : 0.0;
  return e;
}

QuantizationError quantizeTensorFp8(const std::string& name, const float* w, int64_t rows, int64_t cols, uint8_t* codes,
                                    float* scale) {
  // One scale for the matrix (TensorRT-LLM's per-tensor FP8 weights): scale = amax / 448 and codes
  // e4m3(w * (448 / amax)), the formulas the kernels use for activations (kiln/fp8.h).
  const int64_t n = rows * cols;
  float amax = 0;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(w[i]));
  const float inv = fp8InverseScaleOf(amax);
  *scale = fp8ScaleOf(amax);
  double errSq = 0, refSq = 0, maxRel = 0;
  for (int64_t i = 0; i < n; ++i) {
    codes[i] = f32ToE4m3(w[i] * inv);
    const double err = static_cast<double>(e4m3ToF32(codes[i])) * *scale - w[i];
    errSq += err * err;
    refSq += static_cast<double>(w[i]) * w[i];
    // Relative to the matrix's largest magnitude, as int8's is to its row's: an element's own value can be ~0.
    if (amax > 0) maxRel = std::max(maxRel, std::fabs(err) / amax);
  }
  QuantizationError e;
  e.name = name;
  e.maxRelativeError = maxRel;
  e.rmsRelativeError = refSq > 0 ? std::sqrt(errSq / refSq) : 0.0;
  return e;
}

QuantizationError quantizeRowsQ8_0(const std::string& name, const float* w, int64_t rows, int64_t cols, uint8_t* out,
                                   uint64_t* losslessBlocks) {
  double errSq = 0, refSq = 0, maxRel = 0;
  const int64_t blocksPerRow = cols / kQ8_0BlockElements;
  *losslessBlocks = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = w + r * cols;
    float amax = 0;
    for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(row[c]));
    for (int64_t b = 0; b < blocksPerRow; ++b) {
      uint8_t* block = out + (r * blocksPerRow + b) * kQ8_0BlockBytes;
      const float* x = row + b * kQ8_0BlockElements;
      if (quantizeBlockQ8_0Lossless(x, block)) ++*losslessBlocks;
      for (int64_t j = 0; j < kQ8_0BlockElements; ++j) {
        const double err = static_cast<double>(loadAsF32(block, DType::Q8_0, static_cast<size_t>(j))) - x[j];
        errSq += err * err;
        refSq += static_cast<double>(x[j]) * x[j];
        // Relative to the row's largest magnitude, as int8's.
        if (amax > 0) maxRel = std::max(maxRel, std::fabs(err) / amax);
      }
    }
  }
  QuantizationError e;
  e.name = name;
  e.maxRelativeError = maxRel;
  e.rmsRelativeError = refSq > 0 ? std::sqrt(errSq / refSq) : 0.0;
  e.losslessBlocks = *losslessBlocks;
  e.blocks = static_cast<uint64_t>(rows * blocksPerRow);
  return e;
}

WriteEngineResult writeEngineFile(const std::string& path, const std::string& headerJson,
                                  const std::vector<EngineWeightSpec>& specs) {
  const std::string where = path + ": ";
  if (headerJson.empty() || headerJson.size() > kEngineMaxHeaderBytes) {
    throw std::runtime_error(where + "header is " + std::to_string(headerJson.size()) + " bytes; it must be 1 to " +
                             std::to_string(kEngineMaxHeaderBytes));
  }
  Json header;
  try {
    header = Json::parse(headerJson.data(), headerJson.size());
  } catch (const JsonError& e) {
    throw std::runtime_error(where + "invalid header JSON: " + e.what());
  }
  std::vector<EngineWeight> table;
  try {
    checkFormatFields(header, where);
    table = parseWeights(header, static_cast<uint64_t>(kMaxJsSafe), where);
  } catch (const JsonError& e) {
    throw std::runtime_error(where + e.what());
  }

  // The header must describe exactly the weights given, in file order, so the loader finds each one
  // where the builder said it would be.
  if (table.size() != specs.size()) {
    throw std::runtime_error(where + "header.weights lists " + std::to_string(table.size()) + " weights but " +
                             std::to_string(specs.size()) + " were given");
  }
  TensorGatherer gatherer;
  uint64_t dataEnd = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    const EngineWeightSpec& s = specs[i];
    const EngineWeight& t = table[i];
    const std::string what = where + "weight " + std::to_string(i) + " \"" + s.name + "\": ";
    if (t.name != s.name) throw std::runtime_error(what + "header.weights[" + std::to_string(i) + "] is \"" + t.name + "\"");
    if (t.dtype != s.dtype) {
      throw std::runtime_error(what + "dtype " + dtypeName(s.dtype) + " but the header says " + dtypeName(t.dtype));
    }
    if (t.shape != s.shape) {
      throw std::runtime_error(what + "shape " + shapeString(s.shape) + " but the header says " + shapeString(t.shape));
    }
    if (t.groupSize != s.groupSize) {
      throw std::runtime_error(what + "groupSize " + std::to_string(s.groupSize) + " but the header says " +
                               std::to_string(t.groupSize));
    }
    if (t.offset < dataEnd) {
      throw std::runtime_error(what + "offset " + std::to_string(t.offset) +
                               " is before the end of the previous weight (" + std::to_string(dataEnd) +
                               "); weights must be in file order");
    }
    dataEnd = t.offset + t.byteLength;
    if (s.constant) {
      uint64_t elements = 0;
      shapeElements(s.shape, &elements);
      if (s.data.size() != elements) {
        throw std::runtime_error(what + "shape " + shapeString(s.shape) + " has " + std::to_string(elements) +
                                 " elements but data has " + std::to_string(s.data.size()));
      }
    } else {
      // int8, int4 and FP8 weights are gathered as float32 and quantized as they are written.
      TensorWriteSpec ts{s.name, isQuantizedType(s.dtype) ? DType::F32 : s.dtype, s.shape, s.sources};
      gatherer.check(path, ts);
    }
  }

  const uint64_t dataStart = alignUp(kPrefixBytes + headerJson.size());
  AtomicFileWriter file(path);
  Xxh64 hash;
  auto emit = [&](const void* data, size_t n) {
    hash.update(data, n);
    file.write(data, n);
  };
  auto emitZeros = [&](uint64_t n) {
    static const uint8_t zeros[4096] = {};
    while (n > 0) {
      const size_t k = static_cast<size_t>(std::min<uint64_t>(n, sizeof zeros));
      emit(zeros, k);
      n -= k;
    }
  };

  uint8_t prefix[kPrefixBytes];
  std::memcpy(prefix, kEngineMagic, 8);
  putLE(prefix + 8, kEngineFormatVersion, 4);
  putLE(prefix + 12, 0, 4);
  putLE(prefix + 16, headerJson.size(), 8);
  emit(prefix, sizeof prefix);
  emit(headerJson.data(), headerJson.size());
  emitZeros(dataStart - file.bytesWritten());
  std::vector<uint8_t> cast;
  WriteEngineResult result;
  for (size_t i = 0; i < specs.size(); ++i) {
    const EngineWeightSpec& s = specs[i];
    emitZeros(dataStart + table[i].offset - file.bytesWritten());
    if (isQuantizedType(s.dtype)) {
      if (s.constant) {
        throw std::runtime_error(where + "weight \"" + s.name + "\": " + dtypeName(s.dtype) + " weights come from the checkpoint");
      }
      // The whole matrix as float32 first: each row's scale needs the row's largest magnitude.
      std::vector<float> values;
      values.reserve(static_cast<size_t>(s.shape[0] * s.shape[1]));
      gatherer.gather(path, TensorWriteSpec{s.name, DType::F32, s.shape, s.sources}, [&](const void* data, size_t n) {
        const float* f = static_cast<const float*>(data);
        values.insert(values.end(), f, f + n / sizeof(float));
      });
      if (s.dtype == DType::I4) {
        std::vector<uint8_t> codes(static_cast<size_t>(int4CodeBytes(s.shape[0], s.shape[1])));
        std::vector<uint16_t> scales(static_cast<size_t>(s.shape[0] * (s.shape[1] / s.groupSize)));
        result.quantization.push_back(
            quantizeGroupsInt4(s.name, values.data(), s.shape[0], s.shape[1], s.groupSize, codes.data(), scales.data()));
        emit(codes.data(), codes.size());
        emit(scales.data(), scales.size() * sizeof(uint16_t));
      } else if (s.dtype == DType::F8E4M3) {
        std::vector<uint8_t> codes(values.size());
        float scale = 0;
        result.quantization.push_back(quantizeTensorFp8(s.name, values.data(), s.shape[0], s.shape[1], codes.data(), &scale));
        emit(codes.data(), codes.size());
        emit(&scale, sizeof scale);
      } else if (s.dtype == DType::Q8_0) {
        if (s.shape.size() != 2 || s.shape[1] % kQ8_0BlockElements != 0) {
          throw std::runtime_error(where + "weight \"" + s.name + "\": q8_0 weights must be [N, K] with K a multiple of 32");
        }
        std::vector<uint8_t> blocks(static_cast<size_t>(q8_0MatrixBytes(s.shape[0], s.shape[1])));
        uint64_t lossless = 0;
        result.quantization.push_back(quantizeRowsQ8_0(s.name, values.data(), s.shape[0], s.shape[1], blocks.data(), &lossless));
        emit(blocks.data(), blocks.size());
      } else {
        std::vector<int8_t> q(values.size());
        std::vector<float> scales(static_cast<size_t>(s.shape[0]));
        result.quantization.push_back(quantizeRowsInt8(s.name, values.data(), s.shape[0], s.shape[1], q.data(), scales.data()));
        emit(q.data(), q.size());
        emit(scales.data(), scales.size() * sizeof(float));
      }
    } else if (s.constant) {
      cast.resize(s.data.size() * dtypeSize(s.dtype));
      castFromF32(s.data.data(), s.data.size(), s.dtype, cast.data());
      emit(cast.data(), cast.size());
    } else {
      gatherer.gather(path, TensorWriteSpec{s.name, s.dtype, s.shape, s.sources}, emit);
    }
    if (file.bytesWritten() != dataStart + table[i].offset + table[i].byteLength) {
      throw std::logic_error(where + "weight \"" + s.name + "\": wrote an unexpected number of bytes");
    }
  }
  result.checksum = hash.digest();
  uint8_t trailer[kTrailerBytes];
  putLE(trailer, result.checksum, 8);
  file.write(trailer, sizeof trailer);
  result.fileSize = file.bytesWritten();
  file.commit();
  return result;
}

}  // namespace kiln
