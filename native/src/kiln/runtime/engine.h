#pragma once
// A loaded engine: the validated `.engine` file, its op list bound to kernels, the activation arena, the
// paged KV cache and the kernel threads. `generate` runs one request (prefill in chunks, then greedy
// decode); requests are serialized by a mutex. A forward step is described by a StepContext, which can
// already pack several sequences, so an in-flight batching executor can drive `runStep` directly later.
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
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
  int64_t kvCacheTokens = 0;  // 0: maxBatchSize * maxSeqLen; rounded up to whole blocks
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
  int64_t vocabSize = 0;
  std::string modelJson;  // the header's `model` object as JSON text
};

struct GenerateRequest {
  std::vector<int32_t> inputIds;
  int64_t maxTokens = 1;
  int64_t endId = -1;  // < 0: none
  bool returnContextLogits = false;
  bool returnGenerationLogits = false;
};

struct GenerateResult {
  std::vector<int32_t> outputIds;
  std::string finishReason;  // "length" or "stop"
  std::vector<float> contextLogits;     // [promptLength, vocab] when asked for
  std::vector<float> generationLogits;  // [outputIds.size(), vocab] when asked for
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

  // Throws std::runtime_error on an invalid request or a failure; blocks are freed in every case.
  // onToken runs on the calling thread after each token is chosen.
  GenerateResult generate(const GenerateRequest& request, const std::function<void(int32_t)>& onToken);

  // Runs every op once over the step. The logits of logit row r are then at logitsRow(r).
  void runStep(const StepContext& step);
  const float* logitsRow(int64_t r) const { return logits_.data + r * logits_.rowStride; }

 private:
  void configure(const EngineOptions& options);
  void validateRequest(const GenerateRequest& request) const;

  std::unique_ptr<EngineFile> file_;
  EngineInfo info_;
  ModelFacts facts_;
  Isa isa_ = Isa::Generic;
  AlignedBuffer arena_;
  std::unique_ptr<KvBlockPool> kv_;
  std::unique_ptr<ThreadPool> threads_;
  std::vector<BoundOp> ops_;
  ValueRef logits_;
  std::mutex generateMutex_;
};

}  // namespace kiln
