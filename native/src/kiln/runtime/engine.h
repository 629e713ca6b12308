#pragma once
// A loaded engine: the validated `.engine` file and its op list bound to the kernels of the backend its
// target names (runtime/backend.h), which owns the weights' placement, the activation arena, the paged
// KV cache's memory and the kernels' threads or stream. `runStep` runs one forward step over a
// StepContext that packs several sequences; the Executor (executor.h) schedules requests onto such
// steps. Only one thread may run steps at a time (the executor's).
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kiln/format/engine_file.h"
#include "kiln/backends/cpu/kernels/kernels.h"
#include "kiln/runtime/backend.h"
#include "kiln/runtime/kernel_registry.h"
#include "kiln/runtime/parallel.h"
#include "kiln/thread_pool.h"

namespace kiln {

struct EngineOptions {
  int numThreads = 0;         // 0: hardware concurrency
  // KV cache capacity; the smallest of those given wins, and is rounded up to whole blocks. With none
  // given: maxBatchSize * maxSeqLen tokens, and on a GPU at most kDefaultGpuKvFraction of the device
  // memory free once weights and activations are loaded.
  int64_t kvCacheTokens = 0;           // 0: not given
  int64_t kvCacheBytes = 0;            // 0: not given (bytes in the cache's element type)
  // Of the memory available once weights and activations are in place (host MemAvailable on the CPU,
  // free device memory on a GPU, as TensorRT-LLM's kv_cache_free_gpu_mem_fraction); 0: not given.
  double kvCacheMemoryFraction = 0.0;
  bool forceGeneric = false;  // portable kernels even where AVX2 is available
};

constexpr double kDefaultGpuKvFraction = 0.9;

struct EngineInfo {
  uint32_t formatVersion = 0;
  std::string backend;  // "cpu" or "cuda"
  std::string isa;      // cpu: the header's target.isa ("avx2" or "generic"); cuda: "sm_90"
  std::string computeCapability;  // cuda: "9.0"; empty on the CPU
  DType activationDType = DType::F32;
  std::string device;   // the backend's one-line description of where it runs
  uint64_t weightBytes = 0;
  uint64_t kvCacheBytes = 0;
  int64_t kvCacheTokens = 0;  // capacity: blocks * tokensPerBlock
  int64_t maxBatchSize = 0;
  int64_t maxSeqLen = 0;
  int64_t maxNumTokens = 0;
  int64_t maxLogitRows = 0;
  int64_t maxBeamWidth = 1;  // the header's limits.maxBeamWidth (optional there; 1 when absent)
  int64_t vocabSize = 0;
  std::string modelJson;  // the header's `model` object as JSON text
};

class Engine {
 public:
  // Throws std::runtime_error whose message starts with the path and names the key at fault.
  Engine(const std::string& path, const EngineOptions& options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const EngineInfo& info() const { return info_; }

  int32_t kvNumBlocks() const { return kvNumBlocks_; }
  int32_t kvTokensPerBlock() const { return kvGeometry_.tokensPerBlock; }
  // Copies every layer's K and V of block src into block dst (a beam forking a partial block).
  // On rank 0 of a tp/pp engine, every other rank is told to do the same (runtime/parallel.h).
  void copyKvBlock(int32_t src, int32_t dst);
  // Host worker threads; the executor runs its per-row sampling on them between steps.
  ThreadPool* threadPool() { return backend_->threadPool(); }

  // Runs every op once over the step (its `kv` is filled in by the backend). The float32 logits of
  // logit row r are then at logitsRow(r), in host memory.
  // On rank 0 of a tp/pp engine, the step is first announced to every other rank.
  void runStep(const StepContext& step);
  // An engine whose backend samples on its device (the CUDA backend; KILN_CUDA_SAMPLING=host turns it
  // off) runs a step and draws `sampling`'s rows there (Backend::runStepAndSample); of a tp/pp engine,
  // rank 0, which holds the logits (all-gathered, or received from the last stage), after announcing
  // the step to the other ranks.
  bool samplesOnDevice() const { return (!parallel_ || parallel_->isLeader()) && backend_->samplesOnDevice(); }
  void runStepAndSample(const StepContext& step, const StepSampling& sampling);

  // The engine's place among tp/pp ranks (one rank of 1 for an ordinary engine).
  ParallelMapping mapping() const { return parallel_ ? parallel_->mapping() : ParallelMapping(); }
  // The other ranks of a tp/pp engine: replays rank 0's steps and KV block copies until rank 0's engine
  // is destroyed. Blocking; throws std::logic_error on rank 0 or a single-rank engine.
  void follow();
  const float* logitsRow(int64_t r) const { return backend_->logitsRow(r); }

 private:
  void configure(const EngineOptions& options);
  void announceStopOnce();

  std::unique_ptr<EngineFile> file_;
  EngineInfo info_;
  ModelFacts facts_;
  std::unique_ptr<ParallelGroups> parallel_;  // a tp/pp engine's communicators; declared before the ops using them
  std::mutex announceMutex_;  // rank 0: the executor thread's announcements vs. the exit hook's stop
  bool stopAnnounced_ = false;
  int exitHook_ = 0;
  std::unique_ptr<Backend> backend_;
  KvGeometry kvGeometry_;
  int32_t kvNumBlocks_ = 0;
  std::vector<BoundOp> ops_;  // declared after backend_: destroyed first (they may hold its memory)
};

}  // namespace kiln
