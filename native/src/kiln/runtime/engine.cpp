#include "kiln/runtime/engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <cstdio>
#include <climits>
#include <unistd.h>

#include "kiln/runtime/json_write.h"

namespace kiln {

namespace {

// Bounds on header numbers: generous for real models, small enough that every size computed from them
// fits comfortably in 64 bits.
constexpr int64_t kMaxBatchSize = 1 << 16;
constexpr int64_t kMaxSeqLen = 1 << 22;
constexpr int64_t kMaxNumTokens = 1 << 20;
constexpr int64_t kMaxVocab = 1 << 24;
constexpr int64_t kMaxCols = 1 << 24;
constexpr int64_t kMaxArenaBytes = int64_t(1) << 40;
constexpr int64_t kMaxKvDim = 1 << 16;
constexpr int64_t kMaxLayers = 1 << 12;
constexpr int64_t kMaxKvPoolBytes = int64_t(1) << 42;

std::runtime_error headerError(const std::string& message) { return std::runtime_error("header." + message); }

std::string quoted(const std::string& s) { return "\"" + s + "\""; }

int32_t indexIn(const Json& item, const std::string& what, size_t count, const std::string& kind) {
  if (!item.isNumber() || item.asNumber() != std::floor(item.asNumber()) || item.asNumber() < 0 ||
      item.asNumber() >= static_cast<double>(count)) {
    std::string shown = item.isNumber() ? writeJson(item) : "a non-integer";
    throw std::runtime_error(what + " = " + shown + " is out of range (" + std::to_string(count) + " " + kind +
                             ")");
  }
  return static_cast<int32_t>(item.asNumber());
}

// MemAvailable of /proc/meminfo (Linux), else the free physical pages; -1 when neither can be read.
int64_t availableMemoryBytes() {
  if (FILE* f = std::fopen("/proc/meminfo", "r")) {
    char line[256];
    long long kib = -1;
    while (std::fgets(line, sizeof line, f)) {
      if (std::sscanf(line, "MemAvailable: %lld kB", &kib) == 1) break;
    }
    std::fclose(f);
    if (kib > 0) return static_cast<int64_t>(kib) * 1024;
  }
#if defined(_SC_AVPHYS_PAGES) && defined(_SC_PAGESIZE)
  const long pages = sysconf(_SC_AVPHYS_PAGES);
  const long pageSize = sysconf(_SC_PAGESIZE);
  if (pages > 0 && pageSize > 0) return static_cast<int64_t>(pages) * pageSize;
#endif
  return -1;
}

}  // namespace

Engine::Engine(const std::string& path, const EngineOptions& options) {
  file_ = std::make_unique<EngineFile>(path);  // its errors already name the path
  try {
    configure(options);
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
}

Engine::~Engine() = default;

void Engine::configure(const EngineOptions& options) {
  const Json& h = file_->header();

  // --- target ---
  const Json& target = h.at("target", "header");
  if (!target.isObject()) throw headerError("target must be an object");
  const std::string& backend = target.string("backend", "header.target");
  if (backend != "cpu") {
    throw headerError("target.backend " + quoted(backend) + " is not supported by this runtime (only \"cpu\")");
  }
  const std::string& isa = target.string("isa", "header.target");
  if (isa == "avx2") {
    if (detectIsa() != Isa::Avx2) {
      throw std::runtime_error(
          "engine was built for cpu/avx2 but this CPU supports only generic kernels: rebuild it");
    }
    isa_ = options.forceGeneric ? Isa::Generic : Isa::Avx2;
  } else if (isa == "generic") {
    isa_ = Isa::Generic;
  } else {
    throw headerError("target.isa " + quoted(isa) + " is not known to this runtime (expected \"avx2\" or \"generic\")");
  }

  // --- limits, model, kvCache ---
  const Json& limits = h.at("limits", "header");
  info_.formatVersion = kEngineFormatVersion;
  info_.backend = backend;
  info_.isa = isa;
  info_.maxBatchSize = limits.integer("maxBatchSize", "header.limits", 1, kMaxBatchSize);
  info_.maxSeqLen = limits.integer("maxSeqLen", "header.limits", 1, kMaxSeqLen);
  info_.maxNumTokens = limits.integer("maxNumTokens", "header.limits", 1, kMaxNumTokens);
  info_.maxLogitRows = limits.integer("maxLogitRows", "header.limits", 1, kMaxNumTokens);
  // maxBeamWidth came after format version 1's first engines: absent means 1 (no beam search).
  info_.maxBeamWidth = limits.find("maxBeamWidth") ? limits.integer("maxBeamWidth", "header.limits", 1, info_.maxBatchSize) : 1;
  const Json& model = h.at("model", "header");
  if (!model.isObject()) throw headerError("model must be an object");
  info_.vocabSize = model.integer("vocabSize", "header.model", 1, kMaxVocab);
  info_.modelJson = writeJson(model);

  const Json& kv = h.at("kvCache", "header");
  const int64_t numLayers = kv.integer("numLayers", "header.kvCache", 1, kMaxLayers);
  const int64_t numKvHeads = kv.integer("numKvHeads", "header.kvCache", 1, kMaxKvDim);
  const int64_t headDim = kv.integer("headDim", "header.kvCache", 1, kMaxKvDim);
  const int64_t tokensPerBlock = kv.integer("tokensPerBlock", "header.kvCache", 1, kMaxKvDim);

  facts_.vocabSize = info_.vocabSize;
  facts_.maxNumTokens = info_.maxNumTokens;
  facts_.maxLogitRows = info_.maxLogitRows;
  facts_.kvNumLayers = numLayers;
  facts_.kvNumKvHeads = numKvHeads;
  facts_.kvHeadDim = headDim;

  // --- arena and values ---
  const int64_t arenaBytes = h.at("arena", "header").integer("bytes", "header.arena", 1, kMaxArenaBytes);
  try {
    arena_ = AlignedBuffer(static_cast<size_t>(arenaBytes));
  } catch (const std::bad_alloc&) {
    throw std::runtime_error("cannot allocate the activation arena (header.arena.bytes = " +
                             std::to_string(arenaBytes) + ")");
  }
  std::memset(arena_.data(), 0, arena_.size());
  float* arenaBase = static_cast<float*>(arena_.data());

  const Json& valuesJson = h.at("values", "header");
  if (!valuesJson.isArray()) throw headerError("values must be an array");
  std::vector<ValueRef> values;
  values.reserve(valuesJson.items().size());
  for (size_t i = 0; i < valuesJson.items().size(); ++i) {
    const Json& v = valuesJson.items()[i];
    const std::string what = "header.values[" + std::to_string(i) + "]";
    if (!v.isObject()) throw std::runtime_error(what + " must be an object");
    ValueRef ref;
    ref.index = static_cast<int32_t>(i);
    ref.name = v.find("name") ? v.string("name", what) : std::string();
    const std::string& rows = v.string("rows", what);
    if (rows == "tokens") {
      ref.rows = RowsKind::Tokens;
    } else if (rows == "logitRows") {
      ref.rows = RowsKind::LogitRows;
    } else {
      throw std::runtime_error(what + ".rows " + quoted(rows) + " is not known (expected \"tokens\" or \"logitRows\")");
    }
    ref.cols = v.integer("cols", what, 1, kMaxCols);
    ref.rowStride = v.integer("rowStride", what, 1, kMaxCols);
    if (ref.cols > ref.rowStride) {
      throw std::runtime_error(what + ".cols = " + std::to_string(ref.cols) + " exceeds rowStride = " +
                               std::to_string(ref.rowStride));
    }
    const int64_t offset = v.integer("offset", what, 0, arenaBytes);
    if (offset % 4 != 0) throw std::runtime_error(what + ".offset = " + std::to_string(offset) + " is not float-aligned");
    const int64_t maxRows = ref.rows == RowsKind::Tokens ? info_.maxNumTokens : info_.maxLogitRows;
    const int64_t end = offset + 4 * ((maxRows - 1) * ref.rowStride + ref.cols);
    if (end > arenaBytes) {
      throw std::runtime_error(what + " (" + quoted(ref.name) + ") ends at byte " + std::to_string(end) +
                               " for " + std::to_string(maxRows) + " rows, past header.arena.bytes = " +
                               std::to_string(arenaBytes));
    }
    ref.data = arenaBase + offset / 4;
    values.push_back(ref);
  }

  // --- outputs ---
  const Json& outputs = h.at("outputs", "header");
  if (!outputs.isObject()) throw headerError("outputs must be an object");
  const int32_t logitsIndex = indexIn(outputs.at("logits", "header.outputs"), "header.outputs.logits",
                                      values.size(), "values");
  logits_ = values[logitsIndex];
  if (logits_.rows != RowsKind::LogitRows) {
    throw headerError("outputs.logits (value " + std::to_string(logitsIndex) + ") must have rows \"logitRows\"");
  }
  if (logits_.cols != info_.vocabSize) {
    throw headerError("outputs.logits (value " + std::to_string(logitsIndex) + ") has " +
                      std::to_string(logits_.cols) + " cols but model.vocabSize is " +
                      std::to_string(info_.vocabSize));
  }

  // --- ops: resolve references, pick the kernel, bind ---
  const std::vector<EngineWeight>& weights = file_->weights();
  const Json& opsJson = h.at("ops", "header");
  if (!opsJson.isArray()) throw headerError("ops must be an array");
  if (opsJson.items().empty()) throw headerError("ops is empty");
  const KernelRegistry& registry = KernelRegistry::builtin();
  bool logitsWritten = false;
  for (size_t i = 0; i < opsJson.items().size(); ++i) {
    const Json& o = opsJson.items()[i];
    const std::string what = "header.ops[" + std::to_string(i) + "]";
    if (!o.isObject()) throw std::runtime_error(what + " must be an object");
    const std::string& opName = o.string("op", what);
    const std::string prefix = "op " + std::to_string(i) + " (" + opName + "): ";
    try {
      for (const auto& m : o.members()) {
        if (m.first != "op" && m.first != "inputs" && m.first != "outputs" && m.first != "weights" &&
            m.first != "attrs") {
          throw std::runtime_error("unknown key " + quoted(m.first));
        }
      }
      auto valueList = [&](const char* key) {
        std::vector<ValueRef> out;
        const Json* arr = o.find(key);
        if (!arr) return out;
        if (!arr->isArray()) throw std::runtime_error(std::string(key) + " must be an array");
        for (size_t j = 0; j < arr->items().size(); ++j) {
          const std::string item = std::string(key) + "[" + std::to_string(j) + "]";
          out.push_back(values[indexIn(arr->items()[j], item, values.size(), "values")]);
        }
        return out;
      };
      std::vector<ValueRef> inputs = valueList("inputs");
      std::vector<ValueRef> outs = valueList("outputs");
      std::map<std::string, WeightRef> slots;
      if (const Json* w = o.find("weights")) {
        if (!w->isObject()) throw std::runtime_error("weights must be an object");
        for (const auto& m : w->members()) {
          const int32_t wi = indexIn(m.second, "weights." + m.first, weights.size(), "weights");
          const EngineWeight& ew = weights[wi];
          WeightRef ref;
          ref.index = wi;
          ref.name = ew.name;
          ref.dtype = ew.dtype;
          ref.shape = ew.shape;
          ref.data = ew.data;
          slots.emplace(m.first, std::move(ref));
        }
      }
      const Json* attrs = o.find("attrs");
      if (attrs && !attrs->isObject()) throw std::runtime_error("attrs must be an object");

      const DType dt = kernelDTypeOf(slots);
      const OpFactory* factory = registry.findOp(opName, backend, dt);
      if (!factory) {
        throw std::runtime_error("no kernel for op " + quoted(opName) + " on " + backend + "/" + dtypeName(dt));
      }
      for (const ValueRef& v : outs) logitsWritten = logitsWritten || v.index == logitsIndex;
      OpBinding binding(opName, attrs, std::move(inputs), std::move(outs), std::move(slots), facts_);
      BoundOp bound = (*factory)(binding);
      for (const std::string& key : binding.unusedAttrs()) {
        throw std::runtime_error("unknown attribute " + quoted(key));
      }
      for (const std::string& key : binding.unusedWeights()) {
        throw std::runtime_error("unknown weight slot " + quoted(key));
      }
      ops_.push_back(std::move(bound));
    } catch (const std::exception& e) {
      throw std::runtime_error(prefix + e.what());
    }
  }
  if (!logitsWritten) {
    throw headerError("outputs.logits (value " + std::to_string(logitsIndex) + ") is not written by any op");
  }

  // --- KV cache and threads ---
  int64_t kvTokens = info_.maxBatchSize * info_.maxSeqLen;
  const int64_t bytesPerToken = static_cast<int64_t>(KvBlockPool::bytesFor(1, numLayers, numKvHeads, headDim, 1));
  if (options.kvCacheTokens > 0 || options.kvCacheBytes > 0 || options.kvCacheMemoryFraction > 0) {
    kvTokens = INT64_MAX;
    if (options.kvCacheTokens > 0) kvTokens = std::min(kvTokens, options.kvCacheTokens);
    if (options.kvCacheBytes > 0) kvTokens = std::min(kvTokens, options.kvCacheBytes / bytesPerToken);
    if (options.kvCacheMemoryFraction > 0) {
      const int64_t available = availableMemoryBytes();
      if (available <= 0) throw std::runtime_error("kvCacheMemoryFraction: the available memory cannot be read on this system");
      kvTokens = std::min(kvTokens, static_cast<int64_t>(options.kvCacheMemoryFraction * static_cast<double>(available)) / bytesPerToken);
    }
    // Below one block, nothing could run: a block is the least the cache can hold.
    kvTokens = std::max<int64_t>(kvTokens, 1);
  }
  const int64_t numBlocks = (kvTokens + tokensPerBlock - 1) / tokensPerBlock;
  if (numBlocks > INT32_MAX ||
      KvBlockPool::bytesFor(numBlocks, numLayers, numKvHeads, headDim, tokensPerBlock) >
          static_cast<uint64_t>(kMaxKvPoolBytes)) {
    throw std::runtime_error("the KV cache for " + std::to_string(kvTokens) + " tokens is too large (lower kvCacheTokens)");
  }
  kv_ = std::make_unique<KvBlockPool>(static_cast<int32_t>(numBlocks), static_cast<int32_t>(numLayers),
                                      static_cast<int32_t>(numKvHeads), static_cast<int32_t>(headDim),
                                      static_cast<int32_t>(tokensPerBlock));

  int numThreads = options.numThreads;
  if (numThreads <= 0) numThreads = std::max(1u, std::thread::hardware_concurrency());
  threads_ = std::make_unique<ThreadPool>(numThreads);
}

void Engine::runStep(const StepContext& step) {
  StepRuntime rt;
  rt.env.isa = isa_;
  rt.env.pool = threads_.get();
  rt.step = &step;
  for (const BoundOp& op : ops_) op(rt);
}

}  // namespace kiln
