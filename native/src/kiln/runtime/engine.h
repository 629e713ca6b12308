#pragma once
// A loaded engine: the validated `.engine` file, its op list bound to kernels, the activation arena, the
// paged KV cache's memory and the kernel threads. `runStep` runs one forward step over a StepContext
// that packs several sequences; the Executor (executor.h) schedules requests onto such steps. Only one
// thread may run steps at a time (the executor's).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kiln/format/engine_file.h"
#include "kiln/kernels/kernels.h"
#include "kiln/runtime/aligned_buffer.h"
#include "kiln/runtime/kernel_registry.h"
#include "kiln/runtime/kv_cache.h"
#include "kiln/thread_pool.h"

namespace kiln {

struct EngineOptions {
  int numThreads = 0;         // 0: hardware concurrency
  // KV cache capacity; the smallest of those given wins, and is rounded up to whole blocks. With none
  // given: maxBatchSize * maxSeqLen tokens.
  int64_t kvCacheTokens = 0;           // 0: not given
  int64_t kvCacheBytes = 0;            // 0: not given
  double kvCacheMemoryFraction = 0.0;  // of the memory available when the engine loads; 0: not given
  bool forceGeneric = false;  // portable kernels even where AVX2 is available
};

struct EngineInfo {
  uint32_t formatVersion = 0;
  std::string backend;  // "cpu"
  std::string isa;      // the header's target.isa: "avx2" or "generic"
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
  Isa kernelIsa() const { return isa_; }

  KvBlockPool& kvPool() { return *kv_; }
  // The kernels' worker threads; the executor runs its per-row sampling on them between steps.
  ThreadPool* threadPool() { return threads_.get(); }

  // Runs every op once over the step. The logits of logit row r are then at logitsRow(r).
  void runStep(const StepContext& step);
  const float* logitsRow(int64_t r) const { return logits_.data + r * logits_.rowStride; }

 private:
  void configure(const EngineOptions& options);

  std::unique_ptr<EngineFile> file_;
  EngineInfo info_;
  ModelFacts facts_;
  Isa isa_ = Isa::Generic;
  AlignedBuffer arena_;
  std::unique_ptr<KvBlockPool> kv_;
  std::unique_ptr<ThreadPool> threads_;
  std::vector<BoundOp> ops_;
  ValueRef logits_;
};

}  // namespace kiln
