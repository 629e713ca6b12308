#include "kiln/runtime/executor.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>

namespace kiln {

using Clock = std::chrono::steady_clock;

namespace {
double msBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}
}  // namespace

int32_t greedyToken(const float* row, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (std::isnan(row[best])) break;
    if (row[i] > row[best] || std::isnan(row[i])) best = i;
  }
  return static_cast<int32_t>(best);
}

const char* finishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::None: return "";
    case FinishReason::Length: return "length";
    case FinishReason::Stop: return "stop";
    case FinishReason::Cancelled: return "cancelled";
    case FinishReason::Error: return "error";
  }
  return "";
}

// A request inside the executor. Its sequence is `tokens` (prompt, then generated); positions
// [0, numComputed) have their KV in `blocks`. A prefill chunk and a decode step are the same thing:
// feed tokens[numComputed, numComputed + n); when that reaches the end of `tokens`, the last logits
// row chooses the next token. A preempted request keeps its tokens and restarts from numComputed = 0.
struct Executor::Seq {
  RequestId id = 0;
  Request request;
  std::vector<int32_t> tokens;
  int64_t promptLen = 0;
  int64_t maxNew = 0;  // maxTokens, capped so that the sequence fits maxSeqLen
  int64_t numComputed = 0;
  std::vector<int32_t> blocks;
  std::vector<uint64_t> blockHashes;  // chained hashes of full blocks, computed as needed
  int64_t numCommitted = 0;           // leading blocks offered to the prefix cache
  int64_t contextRowsDone = 0;        // context logits rows delivered (prompt positions)
  std::vector<float> contextLogits;
  std::mt19937_64 rng;
  int64_t admissionOrder = -1;
  bool everAdmitted = false;
  Clock::time_point enqueued, firstToken, lastToken;
  RequestStats stats;

  int64_t generated() const { return static_cast<int64_t>(tokens.size()) - promptLen; }
  bool wantsContextRows() const { return request.returnContextLogits && contextRowsDone < promptLen; }
  uint64_t hashOfBlock(int64_t b, int64_t tpb) {
    while (static_cast<int64_t>(blockHashes.size()) <= b) {
      const int64_t i = static_cast<int64_t>(blockHashes.size());
      const uint64_t previous = i == 0 ? 0 : blockHashes[i - 1];
      blockHashes.push_back(hashKvBlock(previous, tokens.data() + i * tpb, static_cast<int32_t>(tpb)));
    }
    return blockHashes[b];
  }
};

struct Executor::Scheduled {
  Seq* seq;
  int64_t start;     // first position fed
  int64_t count;     // tokens fed
  int64_t rowStart;  // first logits row of this sequence
  int64_t rows;      // logits rows: 0, 1 (the last token) or count (context logits)
};

Executor::Executor(std::shared_ptr<Engine> engine, const ExecutorConfig& config, Sink sink)
    : engine_(std::move(engine)),
      config_(config),
      sink_(std::move(sink)),
      blocks_(engine_->kvPool().numBlocks(), engine_->kvPool().tokensPerBlock(), config.enableBlockReuse) {
  const EngineInfo& info = engine_->info();
  auto limit = [](int64_t asked, int64_t engineMax, const char* name) {
    if (asked < 0 || asked > engineMax) {
      throw std::invalid_argument(std::string(name) + " = " + std::to_string(asked) + " is outside [1, " +
                                  std::to_string(engineMax) + "] (the engine's limit; 0 for the limit)");
    }
    return asked == 0 ? engineMax : asked;
  };
  maxBatchSize_ = limit(config.maxBatchSize, info.maxBatchSize, "maxBatchSize");
  maxNumTokens_ = limit(config.maxNumTokens, info.maxNumTokens, "maxNumTokens");
  if (config.iterationStatsHistory < 0) throw std::invalid_argument("iterationStatsHistory must be >= 0");
  maxLogitRows_ = info.maxLogitRows;
  maxSeqLen_ = info.maxSeqLen;
  vocab_ = info.vocabSize;
  tokensPerBlock_ = engine_->kvPool().tokensPerBlock();
  start_ = Clock::now();
  published_.kvBlocksTotal = blocks_.numBlocks();
  published_.kvBlocksFree = blocks_.numAvailable();
  published_.tokensPerBlock = tokensPerBlock_;
  published_.maxBatchSize = maxBatchSize_;
  published_.maxNumTokens = maxNumTokens_;
  thread_ = std::thread([this] { loop(); });
}

Executor::~Executor() { shutdown(true); }

void Executor::validate(const Request& r) const {
  if (r.inputIds.empty()) throw std::invalid_argument("inputIds is empty: the prompt needs at least one token");
  for (size_t i = 0; i < r.inputIds.size(); ++i) {
    if (r.inputIds[i] < 0 || r.inputIds[i] >= vocab_) {
      throw std::invalid_argument("inputIds[" + std::to_string(i) + "] = " + std::to_string(r.inputIds[i]) +
                                  " is outside the vocabulary [0, " + std::to_string(vocab_) + ")");
    }
  }
  if (r.maxTokens < 1) throw std::invalid_argument("maxTokens must be >= 1, got " + std::to_string(r.maxTokens));
  const int64_t P = static_cast<int64_t>(r.inputIds.size());
  if (P >= maxSeqLen_) {
    throw std::invalid_argument("prompt has " + std::to_string(P) + " tokens but the engine's maxSeqLen is " +
                                std::to_string(maxSeqLen_) + " (room is needed for at least one generated token)");
  }
  // The last generated token is never fed back, so the cache holds P + maxNew - 1 positions at most.
  const int64_t maxNew = std::min<int64_t>(r.maxTokens, maxSeqLen_ - P);
  const int64_t positions = P + maxNew - 1;
  if (blocksFor(positions) > blocks_.numBlocks()) {
    throw std::invalid_argument("this request needs " + std::to_string(positions) +
                                " KV cache positions but the cache holds " +
                                std::to_string(int64_t(blocks_.numBlocks()) * tokensPerBlock_) +
                                " tokens (raise kvCacheTokens)");
  }
}

RequestId Executor::enqueue(Request request) {
  validate(request);
  auto s = std::make_unique<Seq>();
  s->promptLen = static_cast<int64_t>(request.inputIds.size());
  s->maxNew = std::min<int64_t>(request.maxTokens, maxSeqLen_ - s->promptLen);
  s->tokens = request.inputIds;
  s->tokens.reserve(static_cast<size_t>(s->promptLen + s->maxNew));
  s->rng.seed(request.seed);
  s->request = std::move(request);
  s->enqueued = Clock::now();
  s->stats.numPromptTokens = s->promptLen;
  std::lock_guard<std::mutex> lock(mutex_);
  if (stopping_) throw std::runtime_error("the executor is shut down: it accepts no more requests");
  s->id = nextId_++;
  const RequestId id = s->id;
  incoming_.push_back(std::move(s));
  wake_.notify_one();
  return id;
}

void Executor::cancel(RequestId id) {
  std::lock_guard<std::mutex> lock(mutex_);
  cancels_.insert(id);
  wake_.notify_one();
}

void Executor::shutdown(bool cancelInFlight) {
  std::lock_guard<std::mutex> once(shutdownMutex_);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    if (cancelInFlight) cancelAll_ = true;
    wake_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
}

ExecutorStats Executor::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  ExecutorStats s = published_;
  s.waitingRequests += static_cast<int64_t>(incoming_.size());
  return s;
}

void Executor::publishStats(const IterationStats& it) {
  std::lock_guard<std::mutex> lock(mutex_);
  published_.iterations = iteration_;
  published_.waitingRequests = static_cast<int64_t>(waiting_.size());
  published_.activeRequests = static_cast<int64_t>(running_.size());
  published_.kvBlocksUsed = blocks_.numUsed();
  published_.kvBlocksFree = blocks_.numAvailable();
  published_.kvBlocksCached = blocks_.numCachedFree();
  if (it.iteration > 0 && config_.iterationStatsHistory > 0) {
    published_.recentIterations.push_back(it);
    const size_t keep = static_cast<size_t>(config_.iterationStatsHistory);
    if (published_.recentIterations.size() > keep) {
      published_.recentIterations.erase(published_.recentIterations.begin(),
                                        published_.recentIterations.end() - keep);
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Blocks

void Executor::commitBlocks(Seq& s) {
  if (!blocks_.reuseEnabled()) return;
  const int64_t full = s.numComputed / tokensPerBlock_;
  for (; s.numCommitted < full; ++s.numCommitted) {
    const int64_t b = s.numCommitted;
    blocks_.commit(s.blocks[b], s.hashOfBlock(b, tokensPerBlock_), s.tokens.data() + b * tokensPerBlock_);
  }
}

void Executor::releaseBlocks(Seq& s) {
  commitBlocks(s);
  blocks_.release(s.blocks);
  s.blocks.clear();
  s.numCommitted = 0;
}

// Takes the request's prefix blocks from the cache and the blocks its policy asks for up front; false
// (holding nothing) when they are not available.
bool Executor::admit(Seq& s) {
  const int64_t total = static_cast<int64_t>(s.tokens.size());
  s.numComputed = 0;
  s.numCommitted = 0;
  // Reuse only full blocks, and leave at least the last token to compute: its logits choose the next
  // token. Context logits need every prompt position computed, so no reuse before they are delivered.
  if (blocks_.reuseEnabled() && !s.wantsContextRows()) {
    const int64_t reusable = (total - 1) / tokensPerBlock_;
    for (int64_t b = 0; b < reusable; ++b) s.hashOfBlock(b, tokensPerBlock_);
    const int32_t matched = blocks_.match(s.blockHashes.data(), s.tokens.data(), static_cast<int32_t>(reusable), &s.blocks);
    s.numComputed = int64_t(matched) * tokensPerBlock_;
    s.numCommitted = matched;
  }
  const int64_t positions = config_.capacitySchedulerPolicy == CapacitySchedulerPolicy::GuaranteedNoEvict
                                ? s.promptLen + s.maxNew - 1
                                : total;
  const int64_t need = blocksFor(std::max(positions, total)) - static_cast<int64_t>(s.blocks.size());
  if (!blocks_.allocate(static_cast<int32_t>(need), &s.blocks)) {
    blocks_.release(s.blocks);
    s.blocks.clear();
    s.numComputed = 0;
    s.numCommitted = 0;
    return false;
  }
  if (!s.everAdmitted) {
    s.everAdmitted = true;
    s.stats.queueTimeMs = msBetween(s.enqueued, Clock::now());
    s.stats.reusedBlocks = s.numComputed / tokensPerBlock_;
  }
  s.admissionOrder = admissions_++;
  return true;
}

void Executor::preempt(Seq& s) {
  releaseBlocks(s);
  s.numComputed = 0;
  s.stats.preemptions++;
}

// ---------------------------------------------------------------------------------------------------
// The loop

void Executor::finish(Seq& s, FinishReason reason, IterationReport& report, const std::string& error) {
  releaseBlocks(s);
  RequestEvent* ev = nullptr;
  for (RequestEvent& e : report.events) {
    if (e.id == s.id) ev = &e;
  }
  if (!ev) {
    report.events.emplace_back();
    ev = &report.events.back();
    ev->id = s.id;
  }
  ev->finishReason = reason;
  ev->error = error;
  const Clock::time_point now = Clock::now();
  s.stats.numOutputTokens = s.generated();
  s.stats.totalTimeMs = msBetween(s.enqueued, now);
  if (s.generated() > 0) s.stats.timeToFirstTokenMs = msBetween(s.enqueued, s.firstToken);
  if (s.generated() > 1) s.stats.timePerOutputTokenMs = msBetween(s.firstToken, s.lastToken) / double(s.generated() - 1);
  ev->stats = s.stats;
}

void Executor::loop() {
  for (;;) {
    IterationReport report;
    bool ran = false;
    try {
      ran = iterate(report);
    } catch (const std::exception& e) {
      // A failed step fails the requests in it; the executor carries on with the others.
      for (auto& s : running_) finish(*s, FinishReason::Error, report, e.what());
      running_.clear();
    }
    if (!report.events.empty() && sink_) sink_(std::move(report));
    if (ran) continue;
    std::unique_lock<std::mutex> lock(mutex_);
    if (stopping_ && incoming_.empty() && waiting_.empty() && running_.empty()) return;
    wake_.wait(lock, [&] { return stopping_ || !incoming_.empty() || !cancels_.empty(); });
    if (stopping_ && incoming_.empty() && waiting_.empty() && running_.empty()) return;
  }
}

bool Executor::iterate(IterationReport& report) {
  const Clock::time_point t0 = Clock::now();
  IterationStats& it = report.stats;
  it.iteration = iteration_;  // a report without a step (cancellations only) carries the last step's number
  it.timestampMs = msBetween(start_, t0);

  // 1. Intake and cancellations.
  std::unordered_set<RequestId> cancels;
  bool cancelAll = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    while (!incoming_.empty()) {
      waiting_.push_back(std::move(incoming_.front()));
      incoming_.pop_front();
    }
    cancels.swap(cancels_);
    cancelAll = cancelAll_;
  }
  if (cancelAll || !cancels.empty()) {
    auto cancelled = [&](const Seq& s) { return cancelAll || cancels.count(s.id) > 0; };
    for (auto& s : running_) {
      if (cancelled(*s)) finish(*s, FinishReason::Cancelled, report);
    }
    running_.erase(std::remove_if(running_.begin(), running_.end(), [&](const std::unique_ptr<Seq>& s) { return cancelled(*s); }),
                   running_.end());
    for (auto& s : waiting_) {
      if (cancelled(*s)) finish(*s, FinishReason::Cancelled, report);
    }
    waiting_.erase(std::remove_if(waiting_.begin(), waiting_.end(), [&](const std::unique_ptr<Seq>& s) { return cancelled(*s); }),
                   waiting_.end());
  }
  if (running_.empty() && waiting_.empty()) {
    publishStats(IterationStats());
    return false;
  }

  // 2. Schedule running requests, oldest first; then admit waiting ones into what is left.
  int64_t tokenBudget = maxNumTokens_, rowBudget = maxLogitRows_;
  std::vector<Scheduled> batch;
  auto plan = [&](Seq& s) -> bool {  // false: nothing of it fits this step
    if (static_cast<int64_t>(batch.size()) >= maxBatchSize_ || tokenBudget <= 0) return false;
    const int64_t remaining = static_cast<int64_t>(s.tokens.size()) - s.numComputed;
    int64_t n = std::min(remaining, tokenBudget);
    int64_t rows;
    if (s.wantsContextRows()) {
      n = std::min(n, rowBudget);
      rows = n;
    } else {
      rows = s.numComputed + n == static_cast<int64_t>(s.tokens.size()) ? 1 : 0;
      if (rows > rowBudget) {  // no logits row left: feed all but the last token
        n = remaining - 1;
        rows = 0;
      }
    }
    if (n <= 0) return false;
    batch.push_back({&s, s.numComputed, n, 0, rows});
    tokenBudget -= n;
    rowBudget -= rows;
    return true;
  };

  for (size_t i = 0; i < running_.size(); ++i) {
    // A full step preempts nobody: the requests left out simply wait for the next one.
    if (static_cast<int64_t>(batch.size()) >= maxBatchSize_ || tokenBudget <= 0) break;
    Seq& s = *running_[i];
    const int64_t remaining = static_cast<int64_t>(s.tokens.size()) - s.numComputed;
    const int64_t n = std::min(remaining, tokenBudget);
    // Under MaxUtilization a growing sequence may need a block now; free one by preempting the most
    // recently admitted running request (this one, when it is the most recent).
    const int64_t need = blocksFor(s.numComputed + n) - static_cast<int64_t>(s.blocks.size());
    bool selfPreempted = false;
    while (need > 0 && blocks_.numAvailable() < need) {
      if (running_.size() - 1 > i) {
        Seq& victim = *running_.back();
        preempt(victim);
        it.preempted++;
        waiting_.push_front(std::move(running_.back()));
        running_.pop_back();
      } else {
        preempt(s);
        it.preempted++;
        waiting_.push_front(std::move(running_[i]));
        running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(i));
        selfPreempted = true;
        break;
      }
    }
    if (selfPreempted) break;
    if (!plan(s)) continue;
    const int64_t have = static_cast<int64_t>(s.blocks.size());
    const int64_t want = blocksFor(batch.back().start + batch.back().count);
    if (want > have) blocks_.allocate(static_cast<int32_t>(want - have), &s.blocks);
  }
  // A request preempted in this iteration waits for the next one, so that it cannot take back the
  // blocks just freed for an older request.
  const bool preemptedNow = it.preempted > 0;
  while (!preemptedNow && !waiting_.empty() && static_cast<int64_t>(batch.size()) < maxBatchSize_ && tokenBudget > 0) {
    Seq& s = *waiting_.front();
    if (!admit(s)) break;  // first come, first served: later requests wait behind it
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
    if (!plan(s)) break;
  }
  if (batch.empty()) {
    // Cannot happen with a request that fits the cache alone (enqueue checks that), but a request that
    // can never be scheduled must fail rather than hang the executor.
    if (running_.empty() && !waiting_.empty()) {
      finish(*waiting_.front(), FinishReason::Error, report, "the request cannot be scheduled: the KV cache is too small");
      waiting_.pop_front();
    }
    publishStats(it);
    return false;
  }

  // 3. One packed step.
  stepTokens_.clear();
  stepPositions_.clear();
  stepSeq_.clear();
  stepRows_.clear();
  stepTables_.clear();
  for (Scheduled& sc : batch) {
    const int32_t seqIndex = static_cast<int32_t>(stepTables_.size());
    stepTables_.push_back(sc.seq->blocks.data());
    const int64_t firstToken = static_cast<int64_t>(stepTokens_.size());
    for (int64_t t = 0; t < sc.count; ++t) {
      stepTokens_.push_back(sc.seq->tokens[sc.start + t]);
      stepPositions_.push_back(static_cast<int32_t>(sc.start + t));
      stepSeq_.push_back(seqIndex);
    }
    sc.rowStart = static_cast<int64_t>(stepRows_.size());
    for (int64_t r = sc.count - sc.rows; r < sc.count; ++r) stepRows_.push_back(static_cast<int32_t>(firstToken + r));
    const bool prefill = sc.seq->numComputed + sc.count < static_cast<int64_t>(sc.seq->tokens.size()) || sc.count > 1 ||
                         sc.seq->generated() == 0;
    (prefill ? it.contextRequests : it.generationRequests)++;
    (prefill ? it.numContextTokens : it.numGenerationTokens) += sc.count;
  }
  StepContext step;
  step.numTokens = static_cast<int32_t>(stepTokens_.size());
  step.tokenIds = stepTokens_.data();
  step.positions = stepPositions_.data();
  step.tokenSeq = stepSeq_.data();
  step.numSeqs = static_cast<int32_t>(stepTables_.size());
  step.blockTables = stepTables_.data();
  step.numLogitRows = static_cast<int32_t>(stepRows_.size());
  step.logitRows = stepRows_.data();
  step.kv = engine_->kvPool().view();
  engine_->runStep(step);

  // 4. Logits, sampling, stop conditions.
  const Clock::time_point now = Clock::now();
  for (Scheduled& sc : batch) {
    Seq& s = *sc.seq;
    s.numComputed += sc.count;
    commitBlocks(s);
    RequestEvent* ev = nullptr;
    auto event = [&]() -> RequestEvent& {
      if (!ev) {
        report.events.emplace_back();
        ev = &report.events.back();
        ev->id = s.id;
      }
      return *ev;
    };
    if (s.request.returnContextLogits) {
      // Rows of positions delivered before a preemption come again when it resumes: skip those.
      for (int64_t r = 0; r < sc.rows; ++r) {
        const int64_t position = sc.start + sc.count - sc.rows + r;
        if (position != s.contextRowsDone || position >= s.promptLen) continue;
        const float* row = engine_->logitsRow(sc.rowStart + r);
        s.contextLogits.insert(s.contextLogits.end(), row, row + vocab_);
        s.contextRowsDone++;
      }
    }
    if (s.numComputed < static_cast<int64_t>(s.tokens.size())) continue;  // mid-prefill

    const float* row = engine_->logitsRow(sc.rowStart + sc.rows - 1);
    int32_t token;
    if (s.request.sampler) {
      SamplingContext ctx;
      ctx.logits = row;
      ctx.vocabSize = vocab_;
      ctx.tokens = s.tokens.data();
      ctx.numPromptTokens = s.promptLen;
      ctx.numTokens = static_cast<int64_t>(s.tokens.size());
      ctx.rng = &s.rng;
      token = s.request.sampler->sample(ctx);
      if (token < 0 || token >= vocab_) {
        finish(s, FinishReason::Error, report, "the sampler chose token " + std::to_string(token) + ", outside the vocabulary");
        continue;
      }
    } else {
      token = greedyToken(row, vocab_);
    }
    if (s.generated() == 0) s.firstToken = now;
    s.lastToken = now;
    s.tokens.push_back(token);
    RequestEvent& e = event();
    e.newTokens.push_back(token);
    if (!s.contextLogits.empty() && s.contextRowsDone == s.promptLen) e.contextLogits.swap(s.contextLogits);
    if (s.request.returnGenerationLogits) e.generationLogits.insert(e.generationLogits.end(), row, row + vocab_);
    if (s.request.endId >= 0 && token == s.request.endId) {
      finish(s, FinishReason::Stop, report);
    } else if (s.generated() >= s.maxNew) {
      finish(s, FinishReason::Length, report);
    }
  }
  // Finished requests leave at once: their events carry a finish reason.
  for (const RequestEvent& e : report.events) {
    if (e.finishReason == FinishReason::None) continue;
    running_.erase(std::remove_if(running_.begin(), running_.end(), [&](const std::unique_ptr<Seq>& s) { return s->id == e.id; }),
                   running_.end());
  }

  ++iteration_;
  it.iteration = iteration_;
  it.timestampMs = msBetween(start_, now);
  it.iterationMs = msBetween(t0, Clock::now());
  it.activeRequests = static_cast<int64_t>(batch.size());
  it.waitingRequests = static_cast<int64_t>(waiting_.size());
  it.numTokens = step.numTokens;
  it.kvBlocksTotal = blocks_.numBlocks();
  it.kvBlocksUsed = blocks_.numUsed();
  it.kvBlocksFree = blocks_.numAvailable();
  it.kvBlocksCached = blocks_.numCachedFree();
  publishStats(it);
  return true;
}

}  // namespace kiln
