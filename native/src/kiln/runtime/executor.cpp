#include "kiln/runtime/executor.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace kiln {

using Clock = std::chrono::steady_clock;

namespace {
double msBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}
}  // namespace

// Whether a token mask allows at least one token of the vocabulary.
bool allowsAnyToken(const std::vector<uint32_t>& mask, int64_t vocab) {
  for (int64_t i = 0; i < vocab; ++i) {
    if ((mask[static_cast<size_t>(i >> 5)] >> (i & 31)) & 1u) return true;
  }
  return false;
}

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
// One beam of a beam search request: its own sequence (prompt + generated) and block table, whose
// blocks it may share with other beams (copy-on-write: see prepareBeamBlocks).
struct Executor::Beam {
  std::vector<int32_t> tokens;
  std::vector<int32_t> blocks;
  double score = 0.0;  // cumulative log-probability (transformers' running_beam_scores)
};

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
  // Beam search, once the prompt is computed (tokens then stays the prompt; blocks moves to the beams).
  std::vector<Beam> beams;
  std::vector<SequenceResult> hypotheses;  // finished, best first, at most beamWidth
  bool improvable = true;                  // transformers' is_early_stop_heuristic_unsatisfied
  std::vector<int32_t> reserve;            // blocks set aside at admission for the beams' growth
  // Constrained decoding: the allowed-token masks of the next token (one, or one per beam), and
  // whether the request waits for them (setTokenMasks) after its last token.
  std::vector<std::vector<uint32_t>> masks;
  bool awaitingMasks = false;

  bool isMasked() const { return !request.tokenMask.empty(); }

  bool isBeam() const { return request.beamWidth > 1; }

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
  int64_t beam;      // -1: the request's own sequence; else the index of one of its beams
  int64_t start;     // first position fed
  int64_t count;     // tokens fed
  int64_t rowStart;  // first logits row of this sequence
  int64_t rows;      // logits rows: 0, 1 (the last token) or count (context logits)
};

Executor::Executor(std::shared_ptr<Engine> engine, const ExecutorConfig& config, Sink sink)
    : engine_(std::move(engine)),
      config_(config),
      sink_(std::move(sink)),
      blocks_(engine_->kvNumBlocks(), engine_->kvTokensPerBlock(), config.enableBlockReuse) {
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
  tokensPerBlock_ = engine_->kvTokensPerBlock();
  maxBeamWidth_ = std::min(info.maxBeamWidth, std::min(maxBatchSize_, maxLogitRows_));
  start_ = Clock::now();
  published_.kvBlocksTotal = blocks_.numBlocks();
  published_.kvBlocksFree = blocks_.numAvailable();
  published_.tokensPerBlock = tokensPerBlock_;
  published_.maxBatchSize = maxBatchSize_;
  published_.maxNumTokens = maxNumTokens_;
  thread_ = std::thread([this] {
    lowerComputeThreadPriority();
    loop();
  });
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
  if (r.beamWidth < 1 || r.beamWidth > maxBeamWidth_) {
    throw std::invalid_argument("beamWidth " + std::to_string(r.beamWidth) + " is outside [1, " + std::to_string(maxBeamWidth_) +
                                "] (the engine's maxBeamWidth, within its maxBatchSize; rebuild with --max-beam-width)");
  }
  if (r.numReturnSequences < 1 || r.numReturnSequences > r.beamWidth) {
    throw std::invalid_argument("numReturnSequences " + std::to_string(r.numReturnSequences) + " is outside [1, beamWidth " +
                                std::to_string(r.beamWidth) + "] (independent samples are separate requests with their own sequenceIndex)");
  }
  if (!std::isfinite(r.lengthPenalty)) throw std::invalid_argument("lengthPenalty must be a finite number");
  for (size_t i = 0; i < r.stopTokenSequences.size(); ++i) {
    if (r.stopTokenSequences[i].empty()) throw std::invalid_argument("stopWords[" + std::to_string(i) + "] is empty");
    for (int32_t id : r.stopTokenSequences[i]) {
      if (id < 0 || id >= vocab_) {
        throw std::invalid_argument("stopWords[" + std::to_string(i) + "] holds token " + std::to_string(id) + ", outside the vocabulary");
      }
    }
  }
  if (!r.tokenMask.empty()) {
    if (static_cast<int64_t>(r.tokenMask.size()) != sampling::tokenMaskWords(vocab_)) {
      throw std::invalid_argument("tokenMask holds " + std::to_string(r.tokenMask.size()) + " words; a vocabulary of " +
                                  std::to_string(vocab_) + " tokens needs " + std::to_string(sampling::tokenMaskWords(vocab_)));
    }
    if (r.sampler) throw std::invalid_argument("tokenMask cannot be combined with a custom Sampler");
    if (!allowsAnyToken(r.tokenMask, vocab_)) throw std::invalid_argument("tokenMask allows no token of the vocabulary");
  }
  const std::string problem = sampling::checkParams(r.sampling, vocab_);
  if (!problem.empty()) throw std::invalid_argument(problem);
  // The last generated token is never fed back, so the cache holds P + maxNew - 1 positions at most.
  const int64_t maxNew = std::min<int64_t>(r.maxTokens, maxSeqLen_ - P);
  const int64_t positions = P + maxNew - 1;
  const int64_t shared = P / tokensPerBlock_;
  const int64_t needed = r.beamWidth > 1 ? shared + r.beamWidth * (blocksFor(positions) - shared) : blocksFor(positions);
  if (needed > blocks_.numBlocks()) {
    throw std::invalid_argument("this request needs " + std::to_string(needed * tokensPerBlock_) +
                                " KV cache positions (" + std::to_string(r.beamWidth) + " beam(s)) but the cache holds " +
                                std::to_string(int64_t(blocks_.numBlocks()) * tokensPerBlock_) +
                                " tokens (raise kvCacheTokens)");
  }
}

RequestId Executor::enqueue(Request request) {
  request.sampling.endId = static_cast<int32_t>(request.endId < 0 ? -1 : request.endId);
  request.sampling.seed = request.seed;
  // Beam search ranks beams by log-probabilities: no warpers, no draw (transformers' num_beams without do_sample).
  if (request.beamWidth > 1) request.sampling.temperature = 0.0f;
  validate(request);
  auto s = std::make_unique<Seq>();
  s->promptLen = static_cast<int64_t>(request.inputIds.size());
  s->maxNew = std::min<int64_t>(request.maxTokens, maxSeqLen_ - s->promptLen);
  s->tokens = request.inputIds;
  s->tokens.reserve(static_cast<size_t>(s->promptLen + s->maxNew));
  s->rng.seed(request.seed);
  if (!request.tokenMask.empty()) s->masks.push_back(request.tokenMask);
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

void Executor::setPaused(RequestId id, bool paused) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (paused) {
    paused_.insert(id);
  } else if (paused_.erase(id) > 0) {
    resumed_ = true;
    wake_.notify_one();  // it may be the only request with work to do
  }
}

void Executor::setTokenMasks(RequestId id, std::vector<std::vector<uint32_t>> masks) {
  std::lock_guard<std::mutex> lock(mutex_);
  incomingMasks_[id] = std::move(masks);
  resumed_ = true;
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
  const int64_t full = std::min<int64_t>(s.numComputed / tokensPerBlock_, static_cast<int64_t>(s.blocks.size()));
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
  for (Beam& b : s.beams) blocks_.release(b.blocks);
  s.beams.clear();
  blocks_.release(s.reserve);
  s.reserve.clear();
}

// The most blocks a beam search request holds at once: the prompt's full blocks, shared by every beam,
// and for each beam the rest of its longest sequence (its partial prompt block becomes its own copy).
int64_t Executor::beamBlockBound(const Seq& s) const {
  const int64_t shared = s.promptLen / tokensPerBlock_;
  return shared + s.request.beamWidth * (blocksFor(s.promptLen + s.maxNew - 1) - shared);
}

bool Executor::takeBlock(Seq& s, int32_t* block) {
  if (!s.reserve.empty()) {
    *block = s.reserve.back();
    s.reserve.pop_back();
    return true;
  }
  std::vector<int32_t> one;
  if (!blocks_.allocate(1, &one)) return false;
  *block = one[0];
  return true;
}

// A beam lets go of one of its blocks. Its last reference goes back to the request's reserve rather than
// the free list, so that the reserve taken at admission always covers the beams' growth; the prompt's
// full blocks (offered to the prefix cache) are released normally.
void Executor::dropBeamBlock(Seq& s, size_t index, int32_t block) {
  if (static_cast<int64_t>(index) >= s.promptLen / tokensPerBlock_ && blocks_.refs(block) == 1) {
    s.reserve.push_back(block);
  } else {
    blocks_.release({block});
  }
}

// Before a decode step of a beam search request: each beam's next position must be in a block of its
// own. A block shared with another beam (a fork of one parent) is copied first: copy-on-write.
bool Executor::prepareBeamBlocks(Seq& s) {
  for (Beam& b : s.beams) {
    const int64_t position = static_cast<int64_t>(b.tokens.size()) - 1;
    const size_t index = static_cast<size_t>(position / tokensPerBlock_);
    int32_t fresh = -1;
    if (index == b.blocks.size()) {
      if (!takeBlock(s, &fresh)) return false;
      b.blocks.push_back(fresh);
    } else if (blocks_.refs(b.blocks[index]) > 1) {
      if (!takeBlock(s, &fresh)) return false;
      engine_->copyKvBlock(b.blocks[index], fresh);
      blocks_.release({b.blocks[index]});
      b.blocks[index] = fresh;
    }
  }
  return true;
}

// The prompt is computed: it becomes the first (and only) beam, holding the prompt's blocks.
void Executor::forkBeams(Seq& s) {
  commitBlocks(s);
  Beam first;
  first.tokens = s.tokens;
  first.blocks = std::move(s.blocks);
  s.blocks.clear();
  s.numCommitted = 0;
  s.beams.clear();
  s.beams.push_back(std::move(first));
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
  // A beam search request takes its prompt's blocks and, in its reserve, all its beams will need: it is
  // never preempted (its beams' KV could not be recomputed from one sequence).
  const int64_t own = s.isBeam() ? blocksFor(total) : blocksFor(std::max(positions, total));
  const int64_t need = own - static_cast<int64_t>(s.blocks.size());
  const int64_t reserve = s.isBeam() ? beamBlockBound(s) - blocksFor(total) : 0;
  if (need + reserve > blocks_.numAvailable() || !blocks_.allocate(static_cast<int32_t>(need), &s.blocks) ||
      !blocks_.allocate(static_cast<int32_t>(reserve), &s.reserve)) {
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

// One step of beam search, as transformers' _beam_search (generation/utils.py): `scores` holds one
// processed log-softmax row per beam. The 2 * beamWidth best candidates over beams x vocab (beam score +
// log-probability) are ranked; those among the first beamWidth that end (end id, or the length limit)
// join the finished hypotheses scored sum / length ** lengthPenalty; the best beamWidth that do not end
// become the next beams. Forking a beam shares its blocks (a reference each); prepareBeamBlocks copies
// a shared partial block before it is written.
void Executor::beamStep(Seq& s, const float* scores, IterationReport& report) {
  const Request& r = s.request;
  const int64_t width = r.beamWidth;
  const int64_t numBeams = static_cast<int64_t>(s.beams.size());
  const int64_t keep = std::min<int64_t>(2 * width, numBeams * vocab_);
  struct Candidate {
    double score;
    int64_t beam;
    int32_t token;
    bool ends;
  };
  // Partial selection of the best `keep` candidates, lowest (beam, token) first on ties.
  std::vector<Candidate> top;
  top.reserve(static_cast<size_t>(keep + 1));
  auto better = [](const Candidate& a, const Candidate& b) {
    if (a.score != b.score) return a.score > b.score;
    return a.beam != b.beam ? a.beam < b.beam : a.token < b.token;
  };
  const bool masked = s.isMasked();
  for (int64_t b = 0; b < numBeams; ++b) {
    const float* row = scores + b * vocab_;
    for (int64_t v = 0; v < vocab_; ++v) {
      if (std::isnan(row[v])) continue;
      // A token its grammar forbids never becomes a beam (transformers would keep -inf candidates to
      // fill 2 * beamWidth; a constrained beam must stay inside its grammar, so it has fewer beams).
      if (masked && row[v] == -std::numeric_limits<float>::infinity()) continue;
      const Candidate c{s.beams[b].score + static_cast<double>(row[v]), b, static_cast<int32_t>(v), false};
      if (static_cast<int64_t>(top.size()) == keep && !better(c, top.back())) continue;
      top.insert(std::upper_bound(top.begin(), top.end(), c, better), c);
      if (static_cast<int64_t>(top.size()) > keep) top.pop_back();
    }
  }
  const int64_t generated = static_cast<int64_t>(s.beams[0].tokens.size()) - s.promptLen + 1;  // with this token
  bool allEnd = true;
  for (Candidate& c : top) {
    c.ends = (r.endId >= 0 && c.token == r.endId) || generated >= s.maxNew;
    allEnd = allEnd && c.ends;
  }

  // Finished hypotheses: only from the first beamWidth candidates, and not once the pool is closed
  // (early stopping with beamWidth hypotheses, or no running beam can improve on them).
  const double norm = std::pow(static_cast<double>(generated), r.lengthPenalty);
  const bool closed = !s.improvable || (r.earlyStopping == EarlyStopping::True && static_cast<int64_t>(s.hypotheses.size()) == width);
  for (int64_t k = 0; k < std::min<int64_t>(width, static_cast<int64_t>(top.size())) && !closed; ++k) {
    const Candidate& c = top[k];
    if (!c.ends) continue;
    SequenceResult h;
    const Beam& parent = s.beams[c.beam];
    h.outputIds.assign(parent.tokens.begin() + s.promptLen, parent.tokens.end());
    h.outputIds.push_back(c.token);
    h.finishReason = r.endId >= 0 && c.token == r.endId ? FinishReason::Stop : FinishReason::Length;
    h.score = c.score / norm;
    auto at = std::upper_bound(s.hypotheses.begin(), s.hypotheses.end(), h,
                               [](const SequenceResult& a, const SequenceResult& b) { return a.score > b.score; });
    s.hypotheses.insert(at, std::move(h));
    if (static_cast<int64_t>(s.hypotheses.size()) > width) s.hypotheses.pop_back();
  }

  // The next beams: the best beamWidth candidates, those that ended pushed to the back with -1e9 as
  // transformers does (they only run on when fewer than beamWidth others exist).
  std::vector<Candidate> next(top);
  for (Candidate& c : next) {
    if (c.ends) c.score += -1.0e9;
  }
  // A constrained beam that ended is complete: its grammar has nothing more to allow.
  if (masked) next.erase(std::remove_if(next.begin(), next.end(), [](const Candidate& c) { return c.ends; }), next.end());
  std::stable_sort(next.begin(), next.end(), [](const Candidate& a, const Candidate& b) { return a.score > b.score; });
  if (static_cast<int64_t>(next.size()) > width) next.resize(static_cast<size_t>(width));
  std::vector<Beam> beams;
  beams.reserve(next.size());
  for (const Candidate& c : next) {
    const Beam& parent = s.beams[c.beam];
    Beam child;
    child.tokens = parent.tokens;
    child.tokens.push_back(c.token);
    child.blocks = parent.blocks;
    for (int32_t block : child.blocks) blocks_.addRef(block);
    child.score = c.score;
    beams.push_back(std::move(child));
  }
  for (Beam& old : s.beams) {
    for (size_t i = old.blocks.size(); i-- > 0;) dropBeamBlock(s, i, old.blocks[i]);
  }
  s.beams = std::move(beams);

  // transformers' _check_early_stop_heuristic, at the new length.
  if (static_cast<int64_t>(s.hypotheses.size()) == width && !s.beams.empty()) {
    const int64_t bestLength = r.earlyStopping == EarlyStopping::Never && r.lengthPenalty > 0.0 ? s.maxNew : generated;
    const double bestPossible = s.beams[0].score / std::pow(static_cast<double>(bestLength), r.lengthPenalty);
    s.improvable = s.improvable && bestPossible > s.hypotheses.back().score;
  }
  const bool done = !s.improvable || allEnd || s.beams.empty() ||
                    (r.earlyStopping == EarlyStopping::True && static_cast<int64_t>(s.hypotheses.size()) == width);
  if (!done) {
    if (s.isMasked()) {  // the grammar side needs each beam's tokens to give their masks
      report.events.emplace_back();
      RequestEvent& ev = report.events.back();
      ev.id = s.id;
      for (const Beam& b : s.beams) ev.beams.emplace_back(b.tokens.begin() + s.promptLen, b.tokens.end());
      s.awaitingMasks = true;
    }
    return;
  }

  // Fewer hypotheses than asked for can only come from a vocabulary smaller than the beams: complete
  // them with the running beams, scored the same way.
  for (const Beam& b : s.beams) {
    if (static_cast<int64_t>(s.hypotheses.size()) >= r.numReturnSequences) break;
    SequenceResult h;
    h.outputIds.assign(b.tokens.begin() + s.promptLen, b.tokens.end());
    h.score = b.score / norm;
    s.hypotheses.push_back(std::move(h));
  }
  if (static_cast<int64_t>(s.hypotheses.size()) > r.numReturnSequences) s.hypotheses.resize(static_cast<size_t>(r.numReturnSequences));
  report.events.emplace_back();
  RequestEvent& ev = report.events.back();
  ev.id = s.id;
  ev.newTokens = s.hypotheses[0].outputIds;
  ev.sequences = std::move(s.hypotheses);
  if (!s.contextLogits.empty() && s.contextRowsDone == s.promptLen) ev.contextLogits.swap(s.contextLogits);
  s.tokens.insert(s.tokens.end(), ev.newTokens.begin(), ev.newTokens.end());  // for the stats
  s.firstToken = s.firstToken == Clock::time_point() ? Clock::now() : s.firstToken;
  s.lastToken = Clock::now();
  const FinishReason reason = ev.sequences[0].finishReason;
  finish(s, reason, report);
}

// ---------------------------------------------------------------------------------------------------
// The loop

void Executor::finish(Seq& s, FinishReason reason, IterationReport& report, const std::string& error) {
  releaseBlocks(s);
  {
    std::lock_guard<std::mutex> lock(mutex_);  // never held by the callers (executor thread, outside intake)
    paused_.erase(s.id);
  }
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
    wake_.wait(lock, [&] { return stopping_ || !incoming_.empty() || !cancels_.empty() || resumed_; });
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
  std::unordered_set<RequestId> paused;
  std::unordered_map<RequestId, std::vector<std::vector<uint32_t>>> masks;
  std::vector<std::pair<RequestId, std::string>> maskErrors;
  bool cancelAll = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    // Cancelled requests are done with flow control; the rest of the paused set is copied for this step.
    for (RequestId id : cancels_) paused_.erase(id);
    if (cancelAll_) paused_.clear();
    paused = paused_;
    resumed_ = false;
    while (!incoming_.empty()) {
      waiting_.push_back(std::move(incoming_.front()));
      incoming_.pop_front();
    }
    cancels.swap(cancels_);
    cancelAll = cancelAll_;
    masks.swap(incomingMasks_);
  }
  // Token masks for requests waiting for them; wrong ones end the request (a bug of the grammar side).
  auto takeMasks = [&](Seq& s) {
    auto found = masks.find(s.id);
    if (found == masks.end()) return;
    std::vector<std::vector<uint32_t>>& given = found->second;
    const size_t expected = s.beams.empty() ? 1 : s.beams.size();
    std::string problem;
    if (!s.isMasked() || !s.awaitingMasks) {
      problem = "setTokenMasks was called for a request that does not wait for token masks";
    } else if (given.size() != expected) {
      problem = "setTokenMasks gave " + std::to_string(given.size()) + " masks for " + std::to_string(expected) + " sequence(s)";
    } else {
      for (const std::vector<uint32_t>& m : given) {
        if (static_cast<int64_t>(m.size()) != sampling::tokenMaskWords(vocab_)) {
          problem = "a token mask holds " + std::to_string(m.size()) + " words instead of " + std::to_string(sampling::tokenMaskWords(vocab_));
        } else if (!allowsAnyToken(m, vocab_)) {
          problem = "a token mask allows no token: the grammar cannot continue";
        }
      }
    }
    if (problem.empty()) {
      s.masks = std::move(given);
      s.awaitingMasks = false;
    } else {
      maskErrors.emplace_back(s.id, problem);
    }
    masks.erase(found);
  };
  for (auto& s : running_) takeMasks(*s);
  for (auto& s : waiting_) takeMasks(*s);
  for (const auto& maskError : maskErrors) {
    // Not a structured binding: C++17 lambdas cannot capture those (clang refuses; the fuzz build uses it).
    const RequestId id = maskError.first;
    const std::string& problem = maskError.second;
    auto failed = [&](const std::unique_ptr<Seq>& s) { return s->id == id; };
    for (auto& s : running_) if (failed(s)) finish(*s, FinishReason::Error, report, problem);
    for (auto& s : waiting_) if (failed(s)) finish(*s, FinishReason::Error, report, problem);
    running_.erase(std::remove_if(running_.begin(), running_.end(), failed), running_.end());
    waiting_.erase(std::remove_if(waiting_.begin(), waiting_.end(), failed), waiting_.end());
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
    batch.push_back({&s, -1, s.numComputed, n, 0, rows});
    tokenBudget -= n;
    rowBudget -= rows;
    return true;
  };
  // A decoding beam search request takes one slot, one token and one logits row per beam, all or none:
  // its step ranks the candidates of every beam together.
  auto planBeams = [&](Seq& s) -> bool {
    const int64_t n = static_cast<int64_t>(s.beams.size());
    if (static_cast<int64_t>(batch.size()) + n > maxBatchSize_ || n > tokenBudget || n > rowBudget) return false;
    for (int64_t b = 0; b < n; ++b) {
      batch.push_back({&s, b, static_cast<int64_t>(s.beams[b].tokens.size()) - 1, 1, 0, 1});
    }
    tokenBudget -= n;
    rowBudget -= n;
    return true;
  };

  std::vector<Seq*> failed;
  for (size_t i = 0; i < running_.size(); ++i) {
    // A full step preempts nobody: the requests left out simply wait for the next one.
    if (static_cast<int64_t>(batch.size()) >= maxBatchSize_ || tokenBudget <= 0) break;
    Seq& s = *running_[i];
    if (!paused.empty() && paused.count(s.id) > 0) continue;  // holds its blocks, takes no step
    if (s.awaitingMasks) continue;  // its grammar has not given the next token's mask yet
    if (!s.beams.empty()) {
      if (!planBeams(s)) continue;
      if (!prepareBeamBlocks(s)) {  // cannot happen: the reserve covers every beam (see beamBlockBound)
        batch.erase(batch.end() - static_cast<std::ptrdiff_t>(s.beams.size()), batch.end());
        failed.push_back(&s);
      }
      continue;
    }
    const int64_t remaining = static_cast<int64_t>(s.tokens.size()) - s.numComputed;
    const int64_t n = std::min(remaining, tokenBudget);
    // Under MaxUtilization a growing sequence may need a block now; free one by preempting the most
    // recently admitted running request (this one, when it is the most recent). Beam search requests
    // hold all their blocks from admission and are never preempted.
    const int64_t need = blocksFor(s.numComputed + n) - static_cast<int64_t>(s.blocks.size());
    bool selfPreempted = false;
    while (need > 0 && blocks_.numAvailable() < need) {
      size_t victim = running_.size();
      for (size_t j = running_.size(); j-- > i + 1;) {
        if (!running_[j]->isBeam()) {
          victim = j;
          break;
        }
      }
      if (victim < running_.size()) {
        preempt(*running_[victim]);
        it.preempted++;
        waiting_.push_front(std::move(running_[victim]));
        running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(victim));
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
  for (Seq* s : failed) finish(*s, FinishReason::Error, report, "the KV cache has no block left for a beam");
  if (!failed.empty()) {
    running_.erase(std::remove_if(running_.begin(), running_.end(),
                                  [&](const std::unique_ptr<Seq>& s) { return std::find(failed.begin(), failed.end(), s.get()) != failed.end(); }),
                   running_.end());
  }
  // A request preempted in this iteration waits for the next one, so that it cannot take back the
  // blocks just freed for an older request.
  const bool preemptedNow = it.preempted > 0;
  while (!preemptedNow && !waiting_.empty() && static_cast<int64_t>(batch.size()) < maxBatchSize_ && tokenBudget > 0) {
    Seq& s = *waiting_.front();
    if (s.awaitingMasks) break;  // preempted while its next mask was computed: it comes in the next iteration
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
    const bool beam = sc.beam >= 0;
    const std::vector<int32_t>& tokens = beam ? sc.seq->beams[sc.beam].tokens : sc.seq->tokens;
    stepTables_.push_back(beam ? sc.seq->beams[sc.beam].blocks.data() : sc.seq->blocks.data());
    const int64_t firstToken = static_cast<int64_t>(stepTokens_.size());
    for (int64_t t = 0; t < sc.count; ++t) {
      stepTokens_.push_back(tokens[sc.start + t]);
      stepPositions_.push_back(static_cast<int32_t>(sc.start + t));
      stepSeq_.push_back(seqIndex);
    }
    sc.rowStart = static_cast<int64_t>(stepRows_.size());
    for (int64_t r = sc.count - sc.rows; r < sc.count; ++r) stepRows_.push_back(static_cast<int32_t>(firstToken + r));
    const bool prefill = !beam && (sc.seq->numComputed + sc.count < static_cast<int64_t>(sc.seq->tokens.size()) || sc.count > 1 ||
                                   sc.seq->generated() == 0);
    if (!beam || sc.beam == 0) (prefill ? it.contextRequests : it.generationRequests)++;
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
  // Where the engine samples on its device, the rows that the native sampler draws (requests whose
  // prompt this step completes, neither beam search nor their own Sampler) are drawn there with the
  // step, and the logits come to the host only if something else reads them: beams, a request's own
  // Sampler, context or generation logits.
  const bool onDevice = engine_->samplesOnDevice();
  std::vector<sampling::SampleRow> deviceRows;
  std::vector<int32_t> deviceLogitRows;
  bool hostLogits = false;
  if (onDevice) {
    for (const Scheduled& sc : batch) {
      const Seq& s = *sc.seq;
      if (s.request.returnContextLogits || s.request.returnGenerationLogits || sc.beam >= 0 || s.isBeam() ||
          s.request.sampler) {
        hostLogits = true;
      }
      if (sc.beam >= 0 || s.isBeam() || s.request.sampler) continue;
      if (s.numComputed + sc.count < static_cast<int64_t>(s.tokens.size())) continue;  // mid-prefill
      sampling::SampleRow row;
      row.tokens = {s.tokens.data(), static_cast<int64_t>(s.tokens.size()), s.promptLen};
      row.params = &s.request.sampling;
      row.step = static_cast<uint64_t>(s.generated());
      row.sequenceIndex = s.request.sequenceIndex;
      row.wantLogprob = s.request.sampling.logprobs > 0;
      row.allowed = s.isMasked() ? s.masks[0].data() : nullptr;
      deviceRows.push_back(row);
      deviceLogitRows.push_back(static_cast<int32_t>(sc.rowStart + sc.rows - 1));
    }
  }
  std::vector<sampling::SampleOutput> deviceOuts(deviceRows.size());
  if (onDevice) {
    StepSampling plan;
    plan.rows = deviceRows.data();
    plan.logitRows = deviceLogitRows.data();
    plan.count = static_cast<int64_t>(deviceRows.size());
    plan.out = deviceOuts.data();
    plan.hostLogits = hostLogits;
    engine_->runStepAndSample(step, plan);
  } else {
    engine_->runStep(step);
  }

  // 4. Logits, sampling, stop conditions. Every row that chooses a token is processed in one batched
  // pass on the kernels' threads: sampled rows by sampleRows, beam rows by log-softmax then the
  // processors (transformers' beam search processes log-probabilities, not logits).
  const Clock::time_point now = Clock::now();
  struct Choice {
    Scheduled* sc;
    int64_t row;  // into sampleLogits_
  };
  std::vector<Choice> sampled;    // rows drawn by the native sampler
  std::vector<Choice> hooked;     // rows of requests with their own Sampler
  std::vector<Choice> beamRows;   // rows of beam search requests, grouped by request in beam order
  std::vector<Seq*> beamSeqs;     // requests whose beams all got their row this step
  for (Scheduled& sc : batch) {
    Seq& s = *sc.seq;
    if (sc.beam >= 0) {
      beamRows.push_back({&sc, 0});
      if (sc.beam == 0) beamSeqs.push_back(&s);
      continue;
    }
    s.numComputed += sc.count;
    commitBlocks(s);
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
    if (s.isBeam()) {
      // The prompt is computed: its last row starts the search from a single beam.
      forkBeams(s);
      beamRows.push_back({&sc, 0});
      beamSeqs.push_back(&s);
    } else if (s.request.sampler) {
      hooked.push_back({&sc, 0});
    } else {
      sampled.push_back({&sc, 0});
    }
  }
  const int64_t numRows = static_cast<int64_t>(sampled.size() + beamRows.size());
  sampleLogits_.resize(static_cast<size_t>(numRows * vocab_));
  if (onDevice && deviceOuts.size() != sampled.size()) {
    throw std::logic_error("executor: the rows sampled on the device are not the rows that sample");
  }
  std::vector<sampling::SampleRow> rows(onDevice ? 0 : sampled.size());
  std::vector<sampling::SampleOutput> outs = std::move(deviceOuts);
  outs.resize(sampled.size());
  for (size_t i = 0; i < sampled.size(); ++i) {
    Scheduled& sc = *sampled[i].sc;
    Seq& s = *sc.seq;
    sampled[i].row = static_cast<int64_t>(i);
    if (onDevice) continue;
    float* dst = sampleLogits_.data() + i * vocab_;
    const float* src = engine_->logitsRow(sc.rowStart + sc.rows - 1);
    std::copy(src, src + vocab_, dst);
    rows[i].logits = dst;
    rows[i].tokens = {s.tokens.data(), static_cast<int64_t>(s.tokens.size()), s.promptLen};
    rows[i].params = &s.request.sampling;
    rows[i].step = static_cast<uint64_t>(s.generated());
    rows[i].sequenceIndex = s.request.sequenceIndex;
    rows[i].wantLogprob = s.request.sampling.logprobs > 0;  // accept() reads out.logprob only then
    rows[i].allowed = s.isMasked() ? s.masks[0].data() : nullptr;
  }
  for (size_t i = 0; i < beamRows.size(); ++i) beamRows[i].row = static_cast<int64_t>(sampled.size() + i);
  ThreadPool* pool = engine_->threadPool();
  sampling::sampleRows(rows.data(), static_cast<int64_t>(rows.size()), vocab_, outs.data(), pool);
  auto beamRow = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const Scheduled& sc = *beamRows[i].sc;
      const Beam& b = sc.seq->beams[sc.beam < 0 ? 0 : sc.beam];
      float* dst = sampleLogits_.data() + beamRows[i].row * vocab_;
      sampling::logSoftmaxRow(engine_->logitsRow(sc.rowStart + sc.rows - 1), vocab_, dst);
      // The grammar's mask comes first among the processors, as in sampleRows.
      if (sc.seq->isMasked()) sampling::applyTokenMask(dst, vocab_, sc.seq->masks[sc.beam < 0 ? 0 : sc.beam].data());
      const sampling::SequenceTokens tokens{b.tokens.data(), static_cast<int64_t>(b.tokens.size()), sc.seq->promptLen};
      sampling::processLogits(dst, vocab_, tokens, sc.seq->request.sampling);
    }
  };
  if (pool != nullptr && beamRows.size() > 1) {
    pool->parallelFor(static_cast<int64_t>(beamRows.size()), 1, beamRow);
  } else {
    beamRow(0, static_cast<int64_t>(beamRows.size()));
  }

  auto accept = [&](Seq& s, const float* raw, int32_t token, const sampling::SampleOutput* out) {
    RequestEvent* ev = nullptr;
    for (RequestEvent& e : report.events) {
      if (e.id == s.id) ev = &e;
    }
    if (!ev) {
      report.events.emplace_back();
      ev = &report.events.back();
      ev->id = s.id;
    }
    if (s.generated() == 0) s.firstToken = now;
    s.lastToken = now;
    s.tokens.push_back(token);
    ev->newTokens.push_back(token);
    if (!s.contextLogits.empty() && s.contextRowsDone == s.promptLen) ev->contextLogits.swap(s.contextLogits);
    if (s.request.returnGenerationLogits) ev->generationLogits.insert(ev->generationLogits.end(), raw, raw + vocab_);
    if (out != nullptr && s.request.sampling.logprobs > 0) {
      TokenLogprobs lp;
      lp.logprob = out->logprob;
      lp.topIds.assign(out->topIds, out->topIds + out->numTop);
      lp.topLogprobs.assign(out->topLogprobs, out->topLogprobs + out->numTop);
      ev->logprobs.push_back(std::move(lp));
    }
    // Its grammar gives the next mask (setTokenMasks) before its next step; a finished request is gone.
    if (s.isMasked()) s.awaitingMasks = true;
    // In sampling.h's order: end id, token-id stop sequences, then the length.
    if (s.request.endId >= 0 && token == s.request.endId) {
      finish(s, FinishReason::Stop, report);
      return;
    }
    const int64_t generated = s.generated();
    for (const std::vector<int32_t>& stop : s.request.stopTokenSequences) {
      const int64_t n = static_cast<int64_t>(stop.size());
      if (n <= generated && std::equal(stop.begin(), stop.end(), s.tokens.end() - n)) {
        ev->stopLength = n;
        finish(s, FinishReason::Stop, report);
        return;
      }
    }
    if (generated >= s.maxNew) finish(s, FinishReason::Length, report);
  };
  for (size_t i = 0; i < sampled.size(); ++i) {
    Scheduled& sc = *sampled[i].sc;
    accept(*sc.seq, engine_->logitsRow(sc.rowStart + sc.rows - 1), outs[i].token, &outs[i]);
  }
  for (Choice& c : hooked) {
    Seq& s = *c.sc->seq;
    const float* row = engine_->logitsRow(c.sc->rowStart + c.sc->rows - 1);
    SamplingContext ctx;
    ctx.logits = row;
    ctx.vocabSize = vocab_;
    ctx.tokens = s.tokens.data();
    ctx.numPromptTokens = s.promptLen;
    ctx.numTokens = static_cast<int64_t>(s.tokens.size());
    ctx.rng = &s.rng;
    const int32_t token = s.request.sampler->sample(ctx);
    if (token < 0 || token >= vocab_) {
      finish(s, FinishReason::Error, report, "the sampler chose token " + std::to_string(token) + ", outside the vocabulary");
      continue;
    }
    accept(s, row, token, nullptr);
  }
  for (size_t i = 0, r = 0; i < beamSeqs.size(); ++i) {
    Seq& s = *beamSeqs[i];
    beamStep(s, sampleLogits_.data() + beamRows[r].row * vocab_, report);
    r += 1;
    while (r < beamRows.size() && beamRows[r].sc->seq == &s) ++r;
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
