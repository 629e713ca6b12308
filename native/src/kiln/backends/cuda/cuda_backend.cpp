#include "kiln/backends/cuda/cuda_backend.h"

#include <algorithm>
#include <cstdio>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "kiln/backends/cuda/cuda_check.h"
#include "kiln/backends/cuda/kernels/kernels.h"
#include "kiln/comm/world.h"
#ifdef KILN_WITH_NCCL
#include "kiln/backends/cuda/device_communicator.h"
#endif

namespace kiln {
namespace cuda {

namespace {

std::string capabilityOf(const cudaDeviceProp& p) { return std::to_string(p.major) + "." + std::to_string(p.minor); }

std::string gib(uint64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f GiB", static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0));
  return text;
}

std::string engineDirOf(const std::string& enginePath) {
  const size_t slash = enginePath.find_last_of('/');
  return slash == std::string::npos ? std::string(".") : enginePath.substr(0, slash);
}

}  // namespace

CudaInfo queryDevices() {
  CudaInfo info;
  info.compiled = true;
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    info.error = std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status);
    cudaGetLastError();  // not sticky: clear it
    return info;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    CudaDeviceInfo d;
    d.index = i;
    d.name = p.name;
    d.computeCapability = capabilityOf(p);
    d.totalBytes = p.totalGlobalMem;
    size_t freeBytes = 0, totalBytes = 0;
    if (cudaSetDevice(i) == cudaSuccess && cudaMemGetInfo(&freeBytes, &totalBytes) == cudaSuccess) d.freeBytes = freeBytes;
    info.devices.push_back(d);
  }
  if (count == 0) info.error = "no CUDA device";
  return info;
}

std::unique_ptr<Backend> makeCudaBackend(const BackendTarget& target, const ModelFacts& facts) {
  return std::make_unique<CudaBackend>(target, facts);
}

CudaBackend::CudaBackend(const BackendTarget& target, const ModelFacts& facts) : dtype_(target.activationDType) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0) {
    const std::string why = status != cudaSuccess ? std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status)
                                                  : std::string("no CUDA device is visible");
    cudaGetLastError();
    throw std::runtime_error("the engine targets cuda (compute capability " + target.computeCapability +
                             ") but no usable CUDA device was found (" + why + ")");
  }
  // The ranks of a tp/pp engine on one machine take one GPU each, by their rank on the machine (as
  // TensorRT-LLM maps them); a single-process engine uses device 0 (CUDA_VISIBLE_DEVICES chooses it).
  if (facts.parallel) {
    device_ = comm::worldInfo().localRank % count;
    parallel_ = true;
  }
  check(cudaSetDevice(device_), "cudaSetDevice");
  check(cudaGetDeviceProperties(&props_, device_), "cudaGetDeviceProperties");
  // Kernels are compiled for one architecture (sm_90): an engine names the capability it was built for.
  if (capabilityOf(props_) != target.computeCapability) {
    throw std::runtime_error("the engine was built for cuda compute capability " + target.computeCapability +
                             " but device " + std::to_string(device_) + " (" + props_.name + ") has compute capability " +
                             capabilityOf(props_) + ": rebuild it for this GPU with `kiln build --checkpoint <checkpoint-dir> --output " +
                             engineDirOf(target.enginePath) + " --target cuda --compute-capability " + capabilityOf(props_) + "`");
  }
  check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  gemm_ = std::make_unique<Gemm>(stream_);
  int numThreads = target.numThreads;
  if (numThreads <= 0) numThreads = static_cast<int>(std::max(1u, std::min(8u, std::thread::hardware_concurrency())));
  threads_ = std::make_unique<ThreadPool>(numThreads);
  vocab_ = facts.vocabSize;
  maxLogitRows_ = facts.maxLogitRows;
  maxNumTokens_ = facts.maxNumTokens;
  maxBlocksPerSeq_ = (facts.maxSeqLen + facts.kvTokensPerBlock - 1) / facts.kvTokensPerBlock;
  // Token ids, positions, sequences, logit rows, block tables, then the query tiles (at most one per token).
  const size_t stage = static_cast<size_t>(3 * maxNumTokens_ + maxLogitRows_ + facts.maxBatchSize * maxBlocksPerSeq_ +
                                           2 * maxNumTokens_);
  check(cudaMallocHost(&hostStage_, stage * sizeof(int32_t)), "cudaMallocHost (step)");
  check(cudaMalloc(&deviceStage_, stage * sizeof(int32_t)), "cudaMalloc (step)");
  const char* graphs = std::getenv("KILN_CUDA_GRAPHS");
  graphsAllowed_ = !(graphs && std::string(graphs) == "0");
  const char* profile = std::getenv("KILN_CUDA_PROFILE");
  profile_ = profile && std::string(profile) == "1";
  if (profile_) graphsAllowed_ = false;
  const char* samplingAt = std::getenv("KILN_CUDA_SAMPLING");
  deviceSampling_ = !(samplingAt && std::string(samplingAt) == "host");
  const char* stepTiming = std::getenv("KILN_CUDA_STEP_TIMING");
  stepTiming_ = stepTiming && std::string(stepTiming) == "1";
  if (stepTiming_) {
    check(cudaEventCreate(&stepStart_), "cudaEventCreate");
    check(cudaEventCreate(&stepEnd_), "cudaEventCreate");
  }
  decodeGraphs_.assign(static_cast<size_t>(facts.maxBatchSize) + 1, nullptr);
  decodeSeen_.assign(decodeGraphs_.size(), 0);
}

std::unique_ptr<comm::Communicator> CudaBackend::makeDeviceCommunicator(comm::Communicator& hostGroup) {
#ifdef KILN_WITH_NCCL
  check(cudaSetDevice(device_), "cudaSetDevice");
  return cuda::makeDeviceCommunicator(hostGroup, device_, stream_);
#else
  (void)hostGroup;
  throw std::runtime_error(
      "this engine is a tp/pp engine for cuda, and this build of @kiln/native has no NCCL: install NCCL (libnccl-dev) "
      "and rebuild the addon with the CUDA backend (KILN_CUDA=on npm run build:native)");
#endif
}

void CudaBackend::runFollowerStep(const std::vector<BoundOp>& ops, const StepContext& step) {
  runStepAndSample(ops, step, StepSampling{});  // no rows drawn, no logits copied to the host
}

CudaBackend::~CudaBackend() {
  if (stream_) cudaStreamSynchronize(stream_);
  if (profile_) {
    printProfile(profileDecode_, "decode");
    printProfile(profileOther_, "other (prefill, mixed)");
  }
  if (stepTiming_) {
    const std::pair<const char*, const StepTotals*> kinds[] = {{"decode", &decodeTiming_}, {"other", &otherTiming_}};
    for (const auto& [kind, t] : kinds) {
      if (t->steps == 0) continue;
      const double n = static_cast<double>(t->steps);
      std::fprintf(stderr,
                   "kiln cuda step timing: %lld %s steps (%.1f tokens per step), host %.1f us in runStep, device %.1f us "
                   "per step\n",
                   static_cast<long long>(t->steps), kind, static_cast<double>(t->tokens) / n, 1e3 * t->hostMs / n,
                   1e3 * t->deviceMs / n);
    }
  }
  if (stepStart_) cudaEventDestroy(stepStart_);
  if (stepEnd_) cudaEventDestroy(stepEnd_);
  for (cudaEvent_t e : profileEvents_) cudaEventDestroy(e);
  for (cudaGraphExec_t g : decodeGraphs_) {
    if (g) cudaGraphExecDestroy(g);
  }
  gemm_.reset();
  for (void* p : {weights_, arena_, kv_.pool, static_cast<void*>(deviceStage_), static_cast<void*>(deviceLogits_), scratch_}) {
    if (p) cudaFree(p);
  }
  for (auto& entry : tables_) cudaFree(entry.second);
  if (hostStage_) cudaFreeHost(hostStage_);
  if (hostLogits_) cudaFreeHost(hostLogits_);
  if (stream_) cudaStreamDestroy(stream_);
}

std::string CudaBackend::deviceDescription() const {
  return std::string(props_.name) + " (compute capability " + capabilityOf(props_) + ", " + gib(props_.totalGlobalMem) + ")";
}

std::string CudaBackend::isa() const { return "sm_" + std::to_string(props_.major) + std::to_string(props_.minor); }

void CudaBackend::placeWeights(const void* hostBase, size_t bytes) {
  hostWeights_ = static_cast<const uint8_t*>(hostBase);
  weightBytes_ = bytes;
  if (bytes == 0) return;
  const cudaError_t status = cudaMalloc(&weights_, bytes);
  if (status != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error("the weights (" + std::to_string(bytes) + " bytes) do not fit in the memory of " +
                             props_.name + ": " + cudaGetErrorString(status));
  }
  // Straight from the memory map: the one and only copy of the weights through the host.
  check(cudaMemcpy(weights_, hostBase, bytes, cudaMemcpyHostToDevice), "cudaMemcpy (weights)");
}

const void* CudaBackend::weightAddress(const void* hostPointer) const {
  return static_cast<const uint8_t*>(weights_) + (static_cast<const uint8_t*>(hostPointer) - hostWeights_);
}

const float* CudaBackend::deviceTable(const std::string& key, const std::vector<float>& values) {
  auto it = tables_.find(key);
  if (it != tables_.end()) return it->second;
  float* device = nullptr;
  check(cudaMalloc(&device, values.size() * sizeof(float)), "cudaMalloc (table)");
  tables_[key] = device;
  check(cudaMemcpy(device, values.data(), values.size() * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy (table)");
  return device;
}

void CudaBackend::allocateArena(int64_t arenaBytes) {
  const size_t bytes = static_cast<size_t>(arenaBytes);
  const cudaError_t status = cudaMalloc(&arena_, bytes);
  if (status != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error("cannot allocate the activation arena (" + std::to_string(bytes) + " bytes) on " +
                             props_.name + ": " + cudaGetErrorString(status));
  }
  check(cudaMemset(arena_, 0, bytes), "cudaMemset (arena)");
}

int64_t CudaBackend::availableMemoryBytes() const {
  size_t freeBytes = 0, totalBytes = 0;
  check(cudaMemGetInfo(&freeBytes, &totalBytes), "cudaMemGetInfo");
  // What binding still reserves (the cuBLASLt workspace is taken already) stays out of the cache's share.
  return static_cast<int64_t>(freeBytes) - static_cast<int64_t>(scratchWanted_);
}

uint64_t CudaBackend::kvBytesPerToken(const KvGeometry& g) const {
  return static_cast<uint64_t>(g.numLayers) * 2 * g.numKvHeads * g.headDim * dtypeSize(dtype_);
}

void CudaBackend::allocateKv(int32_t numBlocks, const KvGeometry& g) {
  kvBlockBytes_ = kvBytesPerToken(g) * static_cast<uint64_t>(g.tokensPerBlock);
  kvBytes_ = kvBlockBytes_ * static_cast<uint64_t>(numBlocks);
  const cudaError_t status = cudaMalloc(&kv_.pool, kvBytes_);
  if (status != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error("cannot allocate the KV cache: " + std::to_string(numBlocks) + " blocks need " +
                             std::to_string(kvBytes_) + " bytes of device memory (" + cudaGetErrorString(status) +
                             "; lower kvCacheBytes / kvCacheTokens / kvCacheMemoryFraction)");
  }
  kv_.numLayers = g.numLayers;
  kv_.numKvHeads = g.numKvHeads;
  kv_.headDim = g.headDim;
  kv_.tokensPerBlock = g.tokensPerBlock;
  if (scratchWanted_ > 0) check(cudaMalloc(&scratch_, scratchWanted_), "cudaMalloc (scratch)");
}

void CudaBackend::copyKvBlock(int32_t src, int32_t dst) {
  if (src == dst) return;
  char* pool = static_cast<char*>(kv_.pool);
  check(cudaMemcpyAsync(pool + static_cast<size_t>(dst) * kvBlockBytes_, pool + static_cast<size_t>(src) * kvBlockBytes_,
                        kvBlockBytes_, cudaMemcpyDeviceToDevice, stream_),
        "cudaMemcpyAsync (KV block)");
}

void CudaBackend::setLogits(const ValueRef& logits) {
  logits_ = logits;
  const size_t bytes = static_cast<size_t>(maxLogitRows_ * vocab_) * sizeof(float);
  check(cudaMalloc(&deviceLogits_, bytes), "cudaMalloc (logits)");
  check(cudaMallocHost(&hostLogits_, bytes), "cudaMallocHost (logits)");
}

void CudaBackend::stageStep(const StepContext& step, DeviceStep* out) {
  if (step.numTokens > maxNumTokens_ || step.numLogitRows > maxLogitRows_ ||
      step.numSeqs > static_cast<int32_t>(decodeGraphs_.size()) - 1) {
    throw std::runtime_error("a step exceeds the engine's limits (maxNumTokens, maxLogitRows or maxBatchSize)");
  }
  // Each sequence's table is copied up to the block of its last position in this step.
  seqMaxPosition_.assign(static_cast<size_t>(step.numSeqs), 0);
  for (int32_t t = 0; t < step.numTokens; ++t) {
    int32_t& m = seqMaxPosition_[static_cast<size_t>(step.tokenSeq[t])];
    m = std::max(m, step.positions[t]);
  }
  const size_t T = static_cast<size_t>(step.numTokens), R = static_cast<size_t>(step.numLogitRows);
  const size_t maxT = static_cast<size_t>(maxNumTokens_), stride = static_cast<size_t>(maxBlocksPerSeq_);
  int32_t* h = hostStage_;
  std::memcpy(h, step.tokenIds, T * sizeof(int32_t));
  std::memcpy(h + maxT, step.positions, T * sizeof(int32_t));
  std::memcpy(h + 2 * maxT, step.tokenSeq, T * sizeof(int32_t));
  if (R) std::memcpy(h + 3 * maxT, step.logitRows, R * sizeof(int32_t));
  const size_t tablesAt = 3 * maxT + static_cast<size_t>(maxLogitRows_);
  for (int32_t s = 0; s < step.numSeqs; ++s) {
    const int32_t used = seqMaxPosition_[static_cast<size_t>(s)] / kv_.tokensPerBlock + 1;
    if (used > maxBlocksPerSeq_) throw std::runtime_error("a sequence is longer than the engine's maxSeqLen");
    std::memcpy(h + tablesAt + static_cast<size_t>(s) * stride, step.blockTables[s], static_cast<size_t>(used) * sizeof(int32_t));
  }
  auto upload = [&](size_t at, size_t count) {
    if (count == 0) return;
    check(cudaMemcpyAsync(deviceStage_ + at, hostStage_ + at, count * sizeof(int32_t), cudaMemcpyHostToDevice, stream_),
          "cudaMemcpyAsync (step)");
  };
  upload(0, T);
  upload(maxT, T);
  upload(2 * maxT, T);
  upload(3 * maxT, R);
  upload(tablesAt, static_cast<size_t>(step.numSeqs) * stride);
  // Query tiles (tiled attention). A decode step's are its tokens one by one, the same for every step of
  // a batch size, as its captured graph expects.
  const size_t tilesAt = tablesAt + static_cast<size_t>(decodeGraphs_.size() - 1) * stride;
  int32_t numTiles = 0;
  {
    int32_t* tiles = h + tilesAt;
    for (int32_t t = 0; t < step.numTokens; ++t) {
      const bool extends = numTiles > 0 && tiles[2 * (numTiles - 1) + 1] < kQueryTile &&
                           step.tokenSeq[t] == step.tokenSeq[t - 1] && step.positions[t] == step.positions[t - 1] + 1;
      if (extends) {
        ++tiles[2 * (numTiles - 1) + 1];
      } else {
        tiles[2 * numTiles] = t;
        tiles[2 * numTiles + 1] = 1;
        ++numTiles;
      }
    }
    upload(tilesAt, static_cast<size_t>(numTiles) * 2);
  }
  out->numTiles = numTiles;
  out->tiles = deviceStage_ + tilesAt;
  out->numTokens = step.numTokens;
  out->numSeqs = step.numSeqs;
  out->numLogitRows = step.numLogitRows;
  out->blockTableStride = static_cast<int32_t>(stride);
  out->tokenIds = deviceStage_;
  out->positions = deviceStage_ + maxT;
  out->tokenSeq = deviceStage_ + 2 * maxT;
  out->logitRows = deviceStage_ + 3 * maxT;
  out->blockTables = deviceStage_ + tablesAt;
}

void CudaBackend::enqueueStep(const std::vector<BoundOp>& ops, const StepRuntime& rt, int64_t logitRows) {
  if (profile_ && profileEvents_.size() < ops.size() + 1) {
    while (profileEvents_.size() < ops.size() + 1) {
      cudaEvent_t e = nullptr;
      check(cudaEventCreate(&e), "cudaEventCreate");
      profileEvents_.push_back(e);
    }
    profileDecode_.ms.assign(ops.size(), 0.0);
    profileOther_.ms.assign(ops.size(), 0.0);
  }
  for (size_t i = 0; i < ops.size(); ++i) {
    if (profile_) check(cudaEventRecord(profileEvents_[i], stream_), "cudaEventRecord");
    ops[i](rt);
  }
  if (profile_) check(cudaEventRecord(profileEvents_[ops.size()], stream_), "cudaEventRecord");
  // The logits as float32 in their own buffer, where the sampler (device or host) reads them (none on
  // the ranks of a tp/pp engine whose stage computes no logits).
  if (logitRows > 0 && deviceLogits_) {
    elementwise(stream_, Elementwise::Copy, value(logits_), value(logits_), logitRows, vocab_, 0.0f,
                Matrix{deviceLogits_, DType::F32, vocab_});
  }
}

cudaGraphExec_t CudaBackend::captureStep(const std::vector<BoundOp>& ops, const StepRuntime& rt, int64_t logitRows) {
  check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
  cudaGraph_t graph = nullptr;
  try {
    enqueueStep(ops, rt, logitRows);
  } catch (...) {
    cudaStreamEndCapture(stream_, &graph);  // leaves capture mode; the partial graph is dropped
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    throw;
  }
  check(cudaStreamEndCapture(stream_, &graph), "cudaStreamEndCapture");
  cudaGraphExec_t exec = nullptr;
  const cudaError_t status = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  check(status, "cudaGraphInstantiate");
  return exec;
}

void CudaBackend::runStep(const std::vector<BoundOp>& ops, const StepContext& step) {
  StepSampling hostOnly;
  hostOnly.hostLogits = true;
  runStepAndSample(ops, step, hostOnly);
}

void CudaBackend::runStepAndSample(const std::vector<BoundOp>& ops, const StepContext& step, const StepSampling& sampling) {
  const auto hostStart = std::chrono::steady_clock::now();
  check(cudaSetDevice(device_), "cudaSetDevice");  // the executor's thread may not have made it current
  if (stepTiming_) check(cudaEventRecord(stepStart_, stream_), "cudaEventRecord");
  DeviceStep deviceStep;
  stageStep(step, &deviceStep);
  StepRuntime rt;
  rt.step = &step;
  rt.device = &deviceStep;
  const int64_t R = step.numLogitRows;
  // A decode step (one token per sequence, each with its logits) has the same launches whatever its
  // data, given its batch size: captured on first sight, replayed after.
  const bool decode = graphsAllowed_ && step.numTokens == step.numSeqs && R == step.numTokens && step.numTokens > 0;
  if (decode) {
    cudaGraphExec_t& graph = decodeGraphs_[static_cast<size_t>(step.numSeqs)];
    // A tp/pp engine runs each batch size's first decode step eagerly, so that NCCL has set up its
    // connections (lazily, at a first collective or send) before any of its calls is captured. Every
    // rank runs the same steps, so every rank captures at the same step.
    uint8_t& seen = decodeSeen_[static_cast<size_t>(step.numSeqs)];
    if (!graph && parallel_ && !seen) {
      seen = 1;
      enqueueStep(ops, rt, R);
    } else {
      if (!graph) {
        // A GEMM whose algorithm is chosen by timing (gemm.h, decision 0021) meeting a new shape during
        // the capture could not time it: then the graph is dropped, this step runs eagerly (and tunes),
        // and the next step of this batch size captures the tuned plans.
        const uint64_t provisional = gemm_->provisionalPlans();
        graph = captureStep(ops, rt, R);
        if (!parallel_ && gemm_->provisionalPlans() != provisional) {
          check(cudaGraphExecDestroy(graph), "cudaGraphExecDestroy");
          graph = nullptr;
          enqueueStep(ops, rt, R);
        }
      }
      if (graph) check(cudaGraphLaunch(graph, stream_), "cudaGraphLaunch");
    }
  } else {
    enqueueStep(ops, rt, R);
  }
  if (R > 0 && sampling.hostLogits && deviceLogits_) {
    check(cudaMemcpyAsync(hostLogits_, deviceLogits_, static_cast<size_t>(R * vocab_) * sizeof(float), cudaMemcpyDeviceToHost,
                          stream_),
          "cudaMemcpyAsync (logits)");
  }
  // Staged on the host while the step runs; the kernel processes the float32 logits in place, after
  // the copy above has read them.
  sampler_.enqueue(stream_, deviceLogits_, vocab_, sampling);
  check(cudaGetLastError(), "a kernel launch of the step");
  if (stepTiming_) check(cudaEventRecord(stepEnd_, stream_), "cudaEventRecord");
  check(cudaStreamSynchronize(stream_), "the step");
  sampler_.finish(sampling);
  if (stepTiming_) {
    float ms = 0.0f;
    check(cudaEventElapsedTime(&ms, stepStart_, stepEnd_), "cudaEventElapsedTime");
    StepTotals& totals = decode ? decodeTiming_ : otherTiming_;
    totals.deviceMs += ms;
    totals.hostMs += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - hostStart).count();
    totals.tokens += step.numTokens;
    ++totals.steps;
  }
  if (profile_ && !ops.empty()) {
    ProfileTotals& totals = step.numTokens == step.numSeqs ? profileDecode_ : profileOther_;
    for (size_t i = 0; i < ops.size(); ++i) {
      float ms = 0.0f;
      check(cudaEventElapsedTime(&ms, profileEvents_[i], profileEvents_[i + 1]), "cudaEventElapsedTime");
      totals.ms[i] += ms;
    }
    ++totals.steps;
    totals.tokens += step.numTokens;
  }
}

void CudaBackend::printProfile(const ProfileTotals& p, const char* what) const {
  if (p.steps == 0) return;
  std::vector<std::pair<std::string, double>> byOp;
  double total = 0.0;
  for (size_t i = 0; i < p.ms.size(); ++i) {
    const std::string& name = i < opNames_.size() ? opNames_[i] : std::string("?");
    auto it = std::find_if(byOp.begin(), byOp.end(), [&](const auto& e) { return e.first == name; });
    if (it == byOp.end()) byOp.emplace_back(name, p.ms[i]); else it->second += p.ms[i];
    total += p.ms[i];
  }
  std::sort(byOp.begin(), byOp.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  const double steps = static_cast<double>(p.steps);
  std::fprintf(stderr, "kiln cuda profile: %lld %s steps (%.1f tokens per step), %.1f us of ops per step\n",
               static_cast<long long>(p.steps), what, static_cast<double>(p.tokens) / steps, 1e3 * total / steps);
  for (const auto& e : byOp) {
    std::fprintf(stderr, "  %-20s %9.1f us/step  %5.1f%%\n", e.first.c_str(), 1e3 * e.second / steps, 100.0 * e.second / total);
  }
}

}  // namespace cuda
}  // namespace kiln
