#include "kiln/runtime/engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <thread>

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

// First index of the maximum, with NaN counted as the maximum (torch.argmax semantics).
int32_t argmax(const float* row, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (std::isnan(row[best])) break;
    if (row[i] > row[best] || std::isnan(row[i])) best = i;
  }
  return static_cast<int32_t>(best);
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
  int64_t kvTokens = options.kvCacheTokens > 0 ? options.kvCacheTokens : info_.maxBatchSize * info_.maxSeqLen;
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

void Engine::validateRequest(const GenerateRequest& r) const {
  if (r.inputIds.empty()) throw std::runtime_error("inputIds is empty: the prompt needs at least one token");
  for (size_t i = 0; i < r.inputIds.size(); ++i) {
    if (r.inputIds[i] < 0 || r.inputIds[i] >= info_.vocabSize) {
      throw std::runtime_error("inputIds[" + std::to_string(i) + "] = " + std::to_string(r.inputIds[i]) +
                               " is outside the vocabulary [0, " + std::to_string(info_.vocabSize) + ")");
    }
  }
  if (r.maxTokens < 1) throw std::runtime_error("maxTokens must be >= 1, got " + std::to_string(r.maxTokens));
  const int64_t P = static_cast<int64_t>(r.inputIds.size());
  if (P >= info_.maxSeqLen) {
    throw std::runtime_error("prompt has " + std::to_string(P) + " tokens but the engine's maxSeqLen is " +
                             std::to_string(info_.maxSeqLen) + " (room is needed for at least one generated token)");
  }
}

GenerateResult Engine::generate(const GenerateRequest& request, const std::function<void(int32_t)>& onToken) {
  validateRequest(request);
  std::lock_guard<std::mutex> lock(generateMutex_);

  const int64_t vocab = info_.vocabSize;
  const int64_t P = static_cast<int64_t>(request.inputIds.size());
  const int64_t maxNew = std::min<int64_t>(request.maxTokens, info_.maxSeqLen - P);
  // The last generated token is never fed back, so the cache holds P + maxNew - 1 positions at most.
  const int64_t cachedPositions = P + maxNew - 1;
  const int64_t tpb = kv_->tokensPerBlock();
  const int64_t blocksNeeded = (cachedPositions + tpb - 1) / tpb;
  if (blocksNeeded > kv_->numBlocks()) {
    throw std::runtime_error("this request needs " + std::to_string(cachedPositions) +
                             " KV cache positions but the cache holds " +
                             std::to_string(int64_t(kv_->numBlocks()) * tpb) + " tokens (raise kvCacheTokens)");
  }
  BlockLease lease(*kv_, static_cast<int32_t>(blocksNeeded));
  const int32_t* blockTables[1] = {lease.blocks().data()};

  GenerateResult result;
  if (request.returnContextLogits) result.contextLogits.reserve(static_cast<size_t>(P * vocab));

  int64_t chunkLimit = info_.maxNumTokens;
  if (request.returnContextLogits) chunkLimit = std::min(chunkLimit, info_.maxLogitRows);
  const size_t stepCapacity = static_cast<size_t>(std::min(chunkLimit, P));
  std::vector<int32_t> positions(stepCapacity, 0);
  std::vector<int32_t> tokenSeq(stepCapacity, 0);  // one sequence: every token belongs to sequence 0
  std::vector<int32_t> logitRows(stepCapacity, 0);
  std::vector<float> last(static_cast<size_t>(vocab));

  StepContext step;
  step.numSeqs = 1;
  step.tokenSeq = tokenSeq.data();
  step.blockTables = blockTables;
  step.positions = positions.data();
  step.logitRows = logitRows.data();
  step.kv = kv_->view();

  // Prefill: positions 0..P-1 in chunks; logits for the chunk's last token, or for all of them.
  for (int64_t start = 0; start < P; start += chunkLimit) {
    const int64_t n = std::min(chunkLimit, P - start);
    for (int64_t t = 0; t < n; ++t) positions[t] = static_cast<int32_t>(start + t);
    if (request.returnContextLogits) {
      for (int64_t t = 0; t < n; ++t) logitRows[t] = static_cast<int32_t>(t);
      step.numLogitRows = static_cast<int32_t>(n);
    } else {
      logitRows[0] = static_cast<int32_t>(n - 1);
      step.numLogitRows = 1;
    }
    step.numTokens = static_cast<int32_t>(n);
    step.tokenIds = request.inputIds.data() + start;
    runStep(step);
    if (request.returnContextLogits) {
      for (int64_t r = 0; r < n; ++r) {
        const float* row = logitsRow(r);
        result.contextLogits.insert(result.contextLogits.end(), row, row + vocab);
      }
    }
    const float* lastRow = logitsRow(step.numLogitRows - 1);
    std::copy(lastRow, lastRow + vocab, last.begin());
  }

  // Decode: choose greedily from `last`, then feed the chosen token back at the next position.
  int32_t fed = 0;
  step.numTokens = 1;
  step.numLogitRows = 1;
  step.tokenIds = &fed;
  logitRows[0] = 0;
  while (true) {
    const int32_t token = argmax(last.data(), vocab);
    result.outputIds.push_back(token);
    if (request.returnGenerationLogits) {
      result.generationLogits.insert(result.generationLogits.end(), last.begin(), last.end());
    }
    if (onToken) onToken(token);
    const int64_t generated = static_cast<int64_t>(result.outputIds.size());
    if (request.endId >= 0 && token == request.endId) {
      result.finishReason = "stop";
      break;
    }
    if (generated >= request.maxTokens || P + generated >= info_.maxSeqLen) {
      result.finishReason = "length";
      break;
    }
    fed = token;
    positions[0] = static_cast<int32_t>(P + generated - 1);
    runStep(step);
    const float* row = logitsRow(0);
    std::copy(row, row + vocab, last.begin());
  }
  return result;
}

}  // namespace kiln
