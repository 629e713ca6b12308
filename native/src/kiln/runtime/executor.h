#pragma once
// The in-flight batching executor (modelled on TensorRT-LLM's executor::Executor). It owns one thread.
// Each iteration it drops cancelled requests, schedules the running ones (decode tokens and the next
// chunks of prompts being prefilled), admits waiting requests into what is left of the step's budget
// (maxNumTokens tokens, maxBatchSize sequences, maxLogitRows logit rows), packs all of it into ONE
// StepContext without padding, runs the engine, samples, and hands the iteration's events to the sink
// in one call. KV blocks come from a KvBlockManager (prefix reuse, LRU eviction of cached blocks) under
// one of two capacity policies:
//  - GuaranteedNoEvict: a request is admitted only once the blocks of its prompt and of all its
//    maxTokens can be taken; it then never waits for memory.
//  - MaxUtilization: a request is admitted once its prompt's blocks can be taken; when a running
//    request needs a block and none is left, the most recently admitted running request is preempted
//    (its blocks freed) and later resumed by recomputing its prompt and generated tokens. Greedy
//    outputs do not change (only the recomputed KV's batch composition does).
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "kiln/runtime/engine.h"
#include "kiln/runtime/kv_block_manager.h"

namespace kiln {

using RequestId = uint64_t;

enum class CapacitySchedulerPolicy { GuaranteedNoEvict, MaxUtilization };

struct ExecutorConfig {
  int64_t maxBatchSize = 0;  // sequences per step; 0: the engine's limit (a larger value is an error)
  int64_t maxNumTokens = 0;  // packed tokens per step; 0: the engine's limit (a larger value is an error)
  CapacitySchedulerPolicy capacitySchedulerPolicy = CapacitySchedulerPolicy::GuaranteedNoEvict;
  bool enableBlockReuse = true;  // prefix reuse of full, computed KV blocks
  int64_t iterationStatsHistory = 256;  // most recent iterations kept for stats(); 0 keeps none
};

// What a sampler sees: the logits row that chooses the next token, and the sequence so far.
struct SamplingContext {
  const float* logits = nullptr;  // [vocabSize]; the sampler may not keep the pointer
  int64_t vocabSize = 0;
  const int32_t* tokens = nullptr;  // prompt then generated tokens
  int64_t numPromptTokens = 0;
  int64_t numTokens = 0;
  std::mt19937_64* rng = nullptr;  // the request's own generator, seeded with Request::seed
};

// The per-request hook where the next token is chosen; runs on the executor's thread. Greedy (the first
// index of the maximum, NaN counting as the maximum, as torch.argmax) when a request has none.
class Sampler {
 public:
  virtual ~Sampler() = default;
  virtual int32_t sample(const SamplingContext& context) = 0;
};

int32_t greedyToken(const float* logits, int64_t vocabSize);

struct Request {
  std::vector<int32_t> inputIds;
  int64_t maxTokens = 1;  // generated tokens at most; stops earlier at the engine's maxSeqLen ("length")
  int64_t endId = -1;     // < 0: none
  bool returnContextLogits = false;
  bool returnGenerationLogits = false;
  std::shared_ptr<Sampler> sampler;  // null: greedy
  uint64_t seed = 0;                 // seeds the request's generator (SamplingContext::rng)
};

enum class FinishReason { None, Length, Stop, Cancelled, Error };
const char* finishReasonName(FinishReason reason);  // "", "length", "stop", "cancelled", "error"

struct RequestStats {
  double queueTimeMs = 0;          // enqueue to first admission
  double timeToFirstTokenMs = 0;   // enqueue to the first generated token
  double timePerOutputTokenMs = 0; // mean time between generated tokens after the first (0 with one token)
  double totalTimeMs = 0;          // enqueue to finish
  int64_t numPromptTokens = 0;
  int64_t numOutputTokens = 0;
  int64_t reusedBlocks = 0;        // prompt KV blocks taken from the prefix cache at first admission
  int64_t preemptions = 0;
};

// One request's news of one iteration.
struct RequestEvent {
  RequestId id = 0;
  std::vector<int32_t> newTokens;
  FinishReason finishReason = FinishReason::None;  // None while it goes on
  std::string error;                               // with FinishReason::Error
  std::vector<float> contextLogits;     // [promptLength, vocab], once, with the first token (when asked for)
  std::vector<float> generationLogits;  // [newTokens.size(), vocab] (when asked for)
  RequestStats stats;                   // set when finished
};

struct IterationStats {
  int64_t iteration = 0;
  double timestampMs = 0;  // since the executor started
  double iterationMs = 0;  // scheduling + step + sampling
  int64_t activeRequests = 0;     // scheduled this iteration
  int64_t waitingRequests = 0;    // still queued after admission
  int64_t contextRequests = 0;    // of the active ones, in prefill
  int64_t generationRequests = 0; // of the active ones, decoding
  int64_t numTokens = 0;          // packed into the step
  int64_t numContextTokens = 0;
  int64_t numGenerationTokens = 0;
  int64_t preempted = 0;
  int64_t kvBlocksTotal = 0;
  int64_t kvBlocksUsed = 0;
  int64_t kvBlocksFree = 0;       // includes the cached ones nobody references
  int64_t kvBlocksCached = 0;     // free, with reusable content
};

struct IterationReport {
  IterationStats stats;
  std::vector<RequestEvent> events;
};

struct ExecutorStats {
  int64_t iterations = 0;
  int64_t waitingRequests = 0;
  int64_t activeRequests = 0;
  int64_t kvBlocksTotal = 0;
  int64_t kvBlocksUsed = 0;
  int64_t kvBlocksFree = 0;
  int64_t kvBlocksCached = 0;
  int64_t tokensPerBlock = 0;
  int64_t maxBatchSize = 0;
  int64_t maxNumTokens = 0;
  std::vector<IterationStats> recentIterations;  // oldest first
};

class Executor {
 public:
  // Called on the executor's thread once per iteration that has events, never concurrently.
  using Sink = std::function<void(IterationReport&&)>;

  // Throws std::invalid_argument when the config exceeds the engine's limits.
  Executor(std::shared_ptr<Engine> engine, const ExecutorConfig& config, Sink sink);
  ~Executor();  // shutdown(true)
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Throws std::invalid_argument naming the field at fault, or std::runtime_error after shutdown.
  RequestId enqueue(Request request);
  // Unknown or finished ids are ignored. The request leaves at the start of the next iteration with
  // FinishReason::Cancelled, its blocks returned.
  void cancel(RequestId id);
  // Stops accepting requests; finishes the queued and running ones (or cancels them when
  // cancelInFlight), then joins the thread. Idempotent; safe from any thread but the executor's.
  void shutdown(bool cancelInFlight);
  ExecutorStats stats() const;

  const Engine& engine() const { return *engine_; }

 private:
  struct Seq;
  struct Scheduled;
  void loop();
  bool iterate(IterationReport& report);  // false when there was nothing to run
  void validate(const Request& r) const;
  void finish(Seq& s, FinishReason reason, IterationReport& report, const std::string& error = std::string());
  void releaseBlocks(Seq& s);
  void commitBlocks(Seq& s);
  bool admit(Seq& s);
  void preempt(Seq& s);
  int64_t blocksFor(int64_t positions) const { return (positions + tokensPerBlock_ - 1) / tokensPerBlock_; }
  void publishStats(const IterationStats& it);

  std::shared_ptr<Engine> engine_;
  ExecutorConfig config_;
  Sink sink_;
  int64_t maxBatchSize_, maxNumTokens_, maxLogitRows_, maxSeqLen_, vocab_, tokensPerBlock_;
  KvBlockManager blocks_;
  std::chrono::steady_clock::time_point start_;

  // Shared with other threads.
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<Seq>> incoming_;
  std::unordered_set<RequestId> cancels_;
  RequestId nextId_ = 1;
  bool stopping_ = false;
  bool cancelAll_ = false;
  ExecutorStats published_;
  std::mutex shutdownMutex_;
  std::thread thread_;

  // The executor thread's own.
  std::deque<std::unique_ptr<Seq>> waiting_;
  std::vector<std::unique_ptr<Seq>> running_;  // in admission order
  int64_t iteration_ = 0;
  int64_t admissions_ = 0;
  std::vector<int32_t> stepTokens_, stepPositions_, stepSeq_, stepRows_;
  std::vector<const int32_t*> stepTables_;
};

}  // namespace kiln
