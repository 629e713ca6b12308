#include "kiln/runtime/engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <cstdio>
#include <climits>
#include <unistd.h>

#include "kiln/comm/world.h"
#include "kiln/runtime/engine_checks.h"
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

}  // namespace

Engine::Engine(const std::string& path, const EngineOptions& options) {
  // Under mpirun, the other ranks wait for this one in a collective: a rank that cannot load its engine
  // ends them all (MPI_Abort), naming itself, rather than leaving them waiting.
  const bool multiRank = comm::worldInfo().size > 1;
  try {
    file_ = std::make_unique<EngineFile>(path);  // its errors already name the path
  } catch (const std::exception& e) {
    if (multiRank) comm::abortWorld(std::string("cannot load ") + e.what());
    throw;
  }
  try {
    configure(options);
  } catch (const std::exception& e) {
    if (multiRank) comm::abortWorld("cannot load " + path + ": " + e.what());
    throw std::runtime_error(path + ": " + e.what());
  }
}

Engine::~Engine() {
  if (exitHook_ != 0) comm::removeExitHook(exitHook_);
  announceStopOnce();
}

void Engine::announceStopOnce() {
  if (!parallel_ || !parallel_->isLeader()) return;
  std::lock_guard<std::mutex> lock(announceMutex_);
  if (stopAnnounced_) return;
  stopAnnounced_ = true;
  announceStop(parallel_->control());
}

void Engine::runStep(const StepContext& step) {
  if (parallel_ && parallel_->isLeader()) {
    std::lock_guard<std::mutex> lock(announceMutex_);
    if (stopAnnounced_) throw std::runtime_error("the other ranks have been told to stop: this engine is shutting down");
    announceStep(parallel_->control(), step, kvGeometry_.tokensPerBlock);
    backend_->runStep(ops_, step);
    return;
  }
  backend_->runStep(ops_, step);
}

void Engine::runStepAndSample(const StepContext& step, const StepSampling& sampling) {
  if (!samplesOnDevice()) throw std::logic_error("runStepAndSample: this engine samples on the host");
  if (parallel_) {  // rank 0 (samplesOnDevice): the other ranks run the step with it
    std::lock_guard<std::mutex> lock(announceMutex_);
    if (stopAnnounced_) throw std::runtime_error("the other ranks have been told to stop: this engine is shutting down");
    announceStep(parallel_->control(), step, kvGeometry_.tokensPerBlock);
    backend_->runStepAndSample(ops_, step, sampling);
    return;
  }
  backend_->runStepAndSample(ops_, step, sampling);
}

void Engine::copyKvBlock(int32_t src, int32_t dst) {
  if (parallel_ && parallel_->isLeader()) {
    std::lock_guard<std::mutex> lock(announceMutex_);
    if (stopAnnounced_) throw std::runtime_error("the other ranks have been told to stop: this engine is shutting down");
    announceKvCopy(parallel_->control(), src, dst);
  }
  backend_->copyKvBlock(src, dst);
}

void Engine::follow() {
  if (!parallel_ || parallel_->isLeader()) throw std::logic_error("follow(): only ranks other than 0 of a tp/pp engine follow");
  ScheduleLimits limits;
  limits.numBlocks = kvNumBlocks_;
  limits.tokensPerBlock = kvGeometry_.tokensPerBlock;
  limits.vocabSize = info_.vocabSize;
  limits.maxSeqLen = info_.maxSeqLen;
  limits.maxNumTokens = info_.maxNumTokens;
  limits.maxLogitRows = info_.maxLogitRows;
  limits.maxBatchSize = info_.maxBatchSize;
  ScheduleReceiver receiver;
  for (;;) {
    switch (receiver.receive(parallel_->control(), limits)) {
      case RankCommand::Stop:
        return;
      case RankCommand::CopyKvBlock:
        backend_->copyKvBlock(receiver.copySource(), receiver.copyTarget());
        break;
      case RankCommand::Step:
        backend_->runFollowerStep(ops_, receiver.step());
        break;
    }
  }
}

void Engine::configure(const EngineOptions& options) {
  const Json& h = file_->header();

  // --- target ---
  const Json& target = h.at("target", "header");
  if (!target.isObject()) throw headerError("target must be an object");
  BackendTarget bt;
  bt.backend = target.string("backend", "header.target");
  bt.numThreads = options.numThreads;
  bt.forceGeneric = options.forceGeneric;
  bt.enginePath = file_->path();
  if (bt.backend == "cpu") {
    bt.isa = target.string("isa", "header.target");
  } else if (bt.backend == "cuda") {
    bt.computeCapability = target.string("computeCapability", "header.target");
    const std::string& act = target.string("activationDType", "header.target");
    // int32 and int8 are weight / index types only, never an activation.
    if (!parseDTypeName(act, &bt.activationDType) || bt.activationDType == DType::I32 || isQuantizedType(bt.activationDType)) {
      throw headerError("target.activationDType " + quoted(act) + " is not known (expected \"float32\", \"float16\" or \"bfloat16\")");
    }
  } else {
    throw headerError("target.backend " + quoted(bt.backend) + " is not supported by this runtime (expected \"cpu\" or \"cuda\")");
  }

  // --- limits, model, kvCache ---
  const Json& limits = h.at("limits", "header");
  info_.formatVersion = kEngineFormatVersion;
  info_.backend = bt.backend;
  info_.computeCapability = bt.computeCapability;
  info_.activationDType = bt.activationDType;
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
  facts_.maxBatchSize = info_.maxBatchSize;
  facts_.maxSeqLen = info_.maxSeqLen;
  facts_.kvTokensPerBlock = tokensPerBlock;
  facts_.maxNumTokens = info_.maxNumTokens;
  facts_.maxLogitRows = info_.maxLogitRows;
  facts_.kvNumLayers = numLayers;
  facts_.kvNumKvHeads = numKvHeads;
  facts_.kvHeadDim = headDim;
  facts_.activationDType = bt.activationDType;

  // --- tp/pp: this rank's communicators, before any op binds to them ---
  const ParallelMapping mapping = readMapping(h);
  if (mapping.worldSize() > 1) {
    parallel_ = std::make_unique<ParallelGroups>(mapping);
    facts_.parallel = parallel_.get();
  }

  // --- backend: where weights, activations and the KV cache live ---
  backend_ = makeBackend(bt, facts_);
  facts_.backend = backend_.get();
  if (parallel_) parallel_->useDeviceCommunicators(*backend_);
  info_.isa = backend_->isa();
  info_.device = backend_->deviceDescription();
  const std::vector<EngineWeight>& weights = file_->weights();
  if (!weights.empty()) {
    const uint8_t* lo = static_cast<const uint8_t*>(weights.front().data);
    const uint8_t* hi = lo;
    for (const EngineWeight& w : weights) {
      const uint8_t* p = static_cast<const uint8_t*>(w.data);
      lo = std::min(lo, p);
      hi = std::max(hi, p + w.byteLength);
    }
    backend_->placeWeights(lo, static_cast<size_t>(hi - lo));
  }
  info_.weightBytes = backend_->weightBytes();

  // --- arena and values ---
  const int64_t arenaBytes = h.at("arena", "header").integer("bytes", "header.arena", 1, kMaxArenaBytes);
  backend_->allocateArena(arenaBytes);

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
    if (const Json* dt = v.find("dtype")) {
      const std::string& name = v.string("dtype", what);
      if (!parseDTypeName(name, &ref.dtype) || ref.dtype == DType::I32 || isQuantizedType(ref.dtype)) {
        throw std::runtime_error(what + ".dtype " + quoted(name) + " is not known (expected \"float32\", \"float16\" or \"bfloat16\")");
      }
      (void)dt;
    }
    if (bt.backend == "cpu" && ref.dtype != DType::F32) {
      throw std::runtime_error(what + ".dtype is " + dtypeName(ref.dtype) + " but cpu engines keep every activation in float32");
    }
    const int64_t size = static_cast<int64_t>(dtypeSize(ref.dtype));
    const int64_t offset = v.integer("offset", what, 0, arenaBytes);
    if (offset % size != 0) {
      throw std::runtime_error(what + ".offset = " + std::to_string(offset) + " is not aligned to its " + dtypeName(ref.dtype) + " elements");
    }
    const int64_t maxRows = ref.rows == RowsKind::Tokens ? info_.maxNumTokens : info_.maxLogitRows;
    const int64_t end = offset + size * ((maxRows - 1) * ref.rowStride + ref.cols);
    if (end > arenaBytes) {
      throw std::runtime_error(what + " (" + quoted(ref.name) + ") ends at byte " + std::to_string(end) +
                               " for " + std::to_string(maxRows) + " rows, past header.arena.bytes = " +
                               std::to_string(arenaBytes));
    }
    ref.byteOffset = offset;
    ref.data = backend_->hostValue(ref.byteOffset);
    values.push_back(ref);
  }

  // --- outputs ---
  const Json& outputs = h.at("outputs", "header");
  if (!outputs.isObject()) throw headerError("outputs must be an object");
  // Only rank 0 samples: the other ranks of a tp/pp engine may have no logits (a middle pipeline stage).
  const bool logitsOptional = parallel_ && !parallel_->isLeader();
  int32_t logitsIndex = -1;
  if (!logitsOptional || outputs.find("logits")) {
    logitsIndex = indexIn(outputs.at("logits", "header.outputs"), "header.outputs.logits", values.size(), "values");
    const ValueRef& logits_ = values[logitsIndex];
    if (logits_.rows != RowsKind::LogitRows) {
      throw headerError("outputs.logits (value " + std::to_string(logitsIndex) + ") must have rows \"logitRows\"");
    }
    if (logits_.cols != info_.vocabSize) {
      throw headerError("outputs.logits (value " + std::to_string(logitsIndex) + ") has " +
                        std::to_string(logits_.cols) + " cols but model.vocabSize is " +
                        std::to_string(info_.vocabSize));
    }
    backend_->setLogits(logits_);
  }

  // --- ops: resolve references, pick the kernel, bind ---
  const Json& opsJson = h.at("ops", "header");
  if (!opsJson.isArray()) throw headerError("ops must be an array");
  if (opsJson.items().empty()) throw headerError("ops is empty");
  const KernelRegistry& registry = KernelRegistry::builtin();
  std::vector<std::string> opNames;
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
          ref.groupSize = ew.groupSize;
          ref.data = backend_->weightAddress(ew.data);
          slots.emplace(m.first, std::move(ref));
        }
      }
      const Json* attrs = o.find("attrs");
      if (attrs && !attrs->isObject()) throw std::runtime_error("attrs must be an object");

      const DType dt = kernelDTypeOf(slots);
      const OpFactory* factory = registry.findOp(opName, bt.backend, dt);
      if (!factory) {
        throw std::runtime_error("no kernel for op " + quoted(opName) + " on " + bt.backend + "/" + dtypeName(dt));
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
      // Profiles (KILN_CUDA_PROFILE) tell a linear's fused neighbours apart: "linear+rms_norm+rope".
      std::string label = opName;
      for (const char* key : {"prologue", "epilogue"}) {
        const Json* a = attrs ? attrs->find(key) : nullptr;
        if (a && a->isString()) label += "+" + a->asString();
      }
      opNames.push_back(label);
    } catch (const std::exception& e) {
      throw std::runtime_error(prefix + e.what());
    }
  }
  backend_->setOpNames(std::move(opNames));
  checkOpDataflow(opsJson, values, info_.maxNumTokens, info_.maxLogitRows);
  // Only rank 0 reads logits: a middle pipeline stage computes none.
  if (!logitsWritten && (!parallel_ || parallel_->isLeader())) {
    throw headerError("outputs.logits (value " + std::to_string(logitsIndex) + ") is not written by any op");
  }

  // --- KV cache ---
  kvGeometry_.numLayers = static_cast<int32_t>(numLayers);
  kvGeometry_.numKvHeads = static_cast<int32_t>(numKvHeads);
  kvGeometry_.headDim = static_cast<int32_t>(headDim);
  kvGeometry_.tokensPerBlock = static_cast<int32_t>(tokensPerBlock);
  const int64_t bytesPerToken = static_cast<int64_t>(backend_->kvBytesPerToken(kvGeometry_));
  const bool onGpu = bt.backend != "cpu";
  int64_t kvTokens = info_.maxBatchSize * info_.maxSeqLen;
  const bool given = options.kvCacheTokens > 0 || options.kvCacheBytes > 0 || options.kvCacheMemoryFraction > 0;
  int64_t available = -1;
  if (given || onGpu) available = backend_->availableMemoryBytes();
  if (given) {
    kvTokens = INT64_MAX;
    if (options.kvCacheTokens > 0) kvTokens = std::min(kvTokens, options.kvCacheTokens);
    if (options.kvCacheBytes > 0) kvTokens = std::min(kvTokens, options.kvCacheBytes / bytesPerToken);
    if (options.kvCacheMemoryFraction > 0) {
      if (available <= 0) throw std::runtime_error("kvCacheMemoryFraction: the available memory cannot be read on this system");
      kvTokens = std::min(kvTokens, static_cast<int64_t>(options.kvCacheMemoryFraction * static_cast<double>(available)) / bytesPerToken);
    }
    // Below one block, nothing could run: a block is the least the cache can hold.
    kvTokens = std::max<int64_t>(kvTokens, 1);
  } else if (onGpu && available > 0) {
    // TensorRT-LLM takes 90% of free device memory whatever the engine can use; Kiln takes no more
    // than every sequence at full length needs.
    kvTokens = std::min(kvTokens, std::max<int64_t>(1, static_cast<int64_t>(kDefaultGpuKvFraction * static_cast<double>(available)) / bytesPerToken));
  }
  const int64_t numBlocks = (kvTokens + tokensPerBlock - 1) / tokensPerBlock;
  // On a GPU a cache that cannot fit is refused here, before any request runs, naming what was asked.
  const double wantedBytes = static_cast<double>(numBlocks) * static_cast<double>(tokensPerBlock) * static_cast<double>(bytesPerToken);
  if (onGpu && available >= 0 && wantedBytes > static_cast<double>(available)) {
    std::string asked;
    if (options.kvCacheTokens > 0) asked += "kvCacheTokens = " + std::to_string(options.kvCacheTokens) + ", ";
    if (options.kvCacheBytes > 0) asked += "kvCacheBytes = " + std::to_string(options.kvCacheBytes) + ", ";
    if (options.kvCacheMemoryFraction > 0) asked += "kvCacheMemoryFraction = " + std::to_string(options.kvCacheMemoryFraction) + ", ";
    throw std::runtime_error("the KV cache does not fit in device memory: " + asked + std::to_string(kvTokens) +
                             " tokens need " + std::to_string(static_cast<uint64_t>(wantedBytes)) + " bytes but " +
                             std::to_string(available) + " are free once weights and activations are loaded " +
                             "(lower kvCacheBytes, kvCacheTokens or kvCacheMemoryFraction)");
  }
  if (numBlocks > INT32_MAX || wantedBytes > static_cast<double>(kMaxKvPoolBytes)) {
    throw std::runtime_error("the KV cache for " + std::to_string(kvTokens) +
                             " tokens is too large (lower kvCacheTokens, kvCacheBytes or kvCacheMemoryFraction)");
  }
  // Every rank holds the same block ids: the pool is as large as the smallest rank's.
  const int64_t agreedBlocks = parallel_ ? parallel_->control().allReduceMin(numBlocks) : numBlocks;
  backend_->allocateKv(static_cast<int32_t>(agreedBlocks), kvGeometry_);
  kvNumBlocks_ = static_cast<int32_t>(agreedBlocks);
  // A process that exits without disposing rank 0's engine still releases the other ranks.
  if (parallel_ && parallel_->isLeader()) exitHook_ = comm::addExitHook([this] { announceStopOnce(); });
  info_.kvCacheBytes = backend_->kvBytes();
  info_.kvCacheTokens = agreedBlocks * tokensPerBlock;
}

}  // namespace kiln
