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
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "kiln/runtime/engine.h"
#include "kiln/runtime/kv_block_manager.h"
#include "kiln/sampling/sampling.h"

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

// A per-request hook that replaces the native sampler (kiln/sampling) for requests that set it; runs on
// the executor's thread. Requests without one are sampled by the native sampler with their
// Request::sampling, all rows of a step in one batched pass.
class Sampler {
 public:
  virtual ~Sampler() = default;
  virtual int32_t sample(const SamplingContext& context) = 0;
};

int32_t greedyToken(const float* logits, int64_t vocabSize);

// Beam search's early_stopping, as transformers: Heuristic (false) stops when the best running beam,
// scored at its current length, cannot beat the worst finished one; True as soon as beamWidth
// hypotheses are finished; Never (the canonical beam search) when no running beam could beat them even
// at the longest length (with a positive length penalty).
enum class EarlyStopping { Heuristic, True, Never };

struct Request {
  std::vector<int32_t> inputIds;
  int64_t maxTokens = 1;  // generated tokens at most; stops earlier at the engine's maxSeqLen ("length")
  int64_t endId = -1;     // < 0: none
  bool returnContextLogits = false;
  bool returnGenerationLogits = false;
  std::shared_ptr<Sampler> sampler;  // null: the native sampler with `sampling`
  uint64_t seed = 0;                 // seeds the request's generator (SamplingContext::rng) and sampling.seed
  // The logits processors and sampler (sampling.endId and sampling.seed are overwritten by endId and
  // seed). Default: greedy.
  sampling::SamplingParams sampling;
  uint32_t sequenceIndex = 0;  // the Philox stream: independent samples of one prompt and seed differ
  // Token-id stop sequences: generation ends (finish reason "stop") when the output ends with one;
  // RequestEvent::stopLength tells how many trailing tokens matched. Each non-empty.
  std::vector<std::vector<int32_t>> stopTokenSequences;
  // Beam search (beamWidth > 1): the beams share the prompt's KV blocks, scores are cumulative
  // log-probabilities of the processed log-softmax, finished hypotheses scored sum / length^lengthPenalty.
  // The request's only event with tokens is its last, with the numReturnSequences best in `sequences`.
  int64_t beamWidth = 1;
  int64_t numReturnSequences = 1;  // <= beamWidth with beams
  double lengthPenalty = 1.0;
  EarlyStopping earlyStopping = EarlyStopping::Heuristic;
  // Constrained decoding: the allowed-token bitmask of the first generated token (tokenMaskWords(vocab)
  // words; see sampling.h); empty: unconstrained. The mask of every later token comes from
  // Executor::setTokenMasks, which the request waits for after each token it generates: the grammar
  // that computes masks runs outside the executor (in JavaScript: xgrammar), and the other requests
  // take their steps meanwhile. With beam search, one mask per beam, in the order of the beams that
  // the request's last event listed in RequestEvent::beams.
  std::vector<uint32_t> tokenMask;
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

// Log-probabilities of one generated token (Request::sampling.logprobs > 0).
struct TokenLogprobs {
  float logprob = 0.0f;  // of the chosen token
  std::vector<int32_t> topIds;  // the sampling.logprobs most likely, best first
  std::vector<float> topLogprobs;
};

// One returned sequence of a beam search request, best first.
struct SequenceResult {
  std::vector<int32_t> outputIds;
  FinishReason finishReason = FinishReason::Length;
  double score = 0.0;  // transformers' sequences_scores: sum of log-probabilities / length ** lengthPenalty
};

// One request's news of one iteration.
struct RequestEvent {
  RequestId id = 0;
  std::vector<int32_t> newTokens;
  FinishReason finishReason = FinishReason::None;  // None while it goes on
  std::string error;                               // with FinishReason::Error
  std::vector<float> contextLogits;     // [promptLength, vocab], once, with the first token (when asked for)
  std::vector<float> generationLogits;  // [newTokens.size(), vocab] (when asked for)
  std::vector<TokenLogprobs> logprobs;  // one per new token, when sampling.logprobs > 0
  int64_t stopLength = 0;  // finished by a stop token sequence: how many trailing output tokens matched it
  std::vector<SequenceResult> sequences;  // beam search, when finished: the best numReturnSequences
  // Beam search with a token mask, while it goes on: each running beam's generated tokens after this
  // step; setTokenMasks takes one mask per beam, in this order.
  std::vector<std::vector<int32_t>> beams;
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
  // Flow control: a paused request keeps its KV blocks and its place but is left out of the steps until
  // it is resumed (a server pauses the request of a client that stopped reading, so that its output does
  // not pile up in memory). Unknown or finished ids are ignored.
  void setPaused(RequestId id, bool paused);
  // Constrained decoding: the allowed-token bitmasks of a request's next step (one, or one per beam in
  // the order of its last event's `beams`), each tokenMaskWords(vocab) words. A request with a
  // Request::tokenMask takes no step until they arrive; a mask of the wrong size or count, or one that
  // allows no token, ends it with FinishReason::Error. Unknown or finished ids are ignored.
  void setTokenMasks(RequestId id, std::vector<std::vector<uint32_t>> masks);
  // Stops accepting requests; finishes the queued and running ones (or cancels them when
  // cancelInFlight), then joins the thread. Idempotent; safe from any thread but the executor's.
  void shutdown(bool cancelInFlight);
  ExecutorStats stats() const;

  const Engine& engine() const { return *engine_; }

 private:
  struct Seq;
  struct Beam;
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
  int64_t beamBlockBound(const Seq& s) const;
  bool takeBlock(Seq& s, int32_t* block);
  bool prepareBeamBlocks(Seq& s);
  void forkBeams(Seq& s);
  void dropBeamBlock(Seq& s, size_t index, int32_t block);
  void beamStep(Seq& s, const float* scores, IterationReport& report);

  std::shared_ptr<Engine> engine_;
  ExecutorConfig config_;
  Sink sink_;
  int64_t maxBatchSize_, maxNumTokens_, maxLogitRows_, maxSeqLen_, vocab_, tokensPerBlock_, maxBeamWidth_;
  KvBlockManager blocks_;
  std::chrono::steady_clock::time_point start_;

  // Shared with other threads.
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<Seq>> incoming_;
  std::unordered_set<RequestId> cancels_;
  std::unordered_set<RequestId> paused_;
  bool resumed_ = false;  // a request left paused_ or got its token masks: the executor thread has work again
  std::unordered_map<RequestId, std::vector<std::vector<uint32_t>>> incomingMasks_;
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
  std::vector<float> sampleLogits_;  // processed copies of the rows sampled this step
};

}  // namespace kiln
