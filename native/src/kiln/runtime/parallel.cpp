#include "kiln/runtime/parallel.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "kiln/comm/world.h"
#include "kiln/runtime/backend.h"

namespace kiln {

namespace {

constexpr int kMaxRanks = 1 << 12;

// The fixed part of every announcement: the command, then for a step numTokens, numSeqs,
// numLogitRows and the length of the payload that follows.
struct Announcement {
  int32_t command = 0;
  int32_t numTokens = 0;
  int32_t numSeqs = 0;
  int32_t numLogitRows = 0;
  int32_t payloadInts = 0;
  int32_t copySrc = 0;
  int32_t copyDst = 0;
  int32_t reserved = 0;
};

}  // namespace

ParallelMapping readMapping(const Json& header) {
  ParallelMapping m;
  const Json* mapping = header.find("mapping");
  if (!mapping) return m;
  if (!mapping->isObject()) throw std::runtime_error("header.mapping must be an object");
  m.tpSize = static_cast<int>(mapping->integer("tpSize", "header.mapping", 1, kMaxRanks));
  m.ppSize = static_cast<int>(mapping->integer("ppSize", "header.mapping", 1, kMaxRanks));
  if (m.worldSize() > kMaxRanks) throw std::runtime_error("header.mapping: tpSize * ppSize exceeds " + std::to_string(kMaxRanks));
  m.rank = static_cast<int>(mapping->integer("rank", "header.mapping", 0, m.worldSize() - 1));
  for (const auto& member : mapping->members()) {
    if (member.first != "tpSize" && member.first != "ppSize" && member.first != "rank") {
      throw std::runtime_error("header.mapping: unknown key \"" + member.first + "\"");
    }
  }
  return m;
}

ParallelGroups::ParallelGroups(const ParallelMapping& mapping) : mapping_(mapping) {
  const comm::WorldInfo w = comm::worldInfo();
  const std::string shape = "tp " + std::to_string(mapping.tpSize) + " x pp " + std::to_string(mapping.ppSize);
  if (!w.launchedByMpirun || w.size != mapping.worldSize()) {
    throw std::runtime_error("this engine is rank " + std::to_string(mapping.rank) + " of " + shape + " = " +
                             std::to_string(mapping.worldSize()) + " ranks, but this process is " +
                             (w.launchedByMpirun ? "one of " + std::to_string(w.size) + " ranks" : "not launched by mpirun") +
                             ": run it with `mpirun -n " + std::to_string(mapping.worldSize()) + " ...`");
  }
  if (w.rank != mapping.rank) {
    throw std::runtime_error("this is the engine file of rank " + std::to_string(mapping.rank) + " but this process is rank " +
                             std::to_string(w.rank));
  }
  world_ = &comm::worldCommunicator();
  tp_ = world_->split(mapping.ppRank(), mapping.tpRank());
}

void ParallelGroups::useDeviceCommunicators(Backend& backend) {
  // Only the groups an op uses: the tensor-parallel group when tp > 1, the pipeline when pp > 1. Every
  // rank makes them in the same order (NCCL's init is collective over each group).
  if (mapping_.tpSize > 1) tpDevice_ = backend.makeDeviceCommunicator(*tp_);
  if (mapping_.ppSize > 1) pipelineDevice_ = backend.makeDeviceCommunicator(*world_);
}

void announceStep(comm::Communicator& control, const StepContext& step, int32_t tokensPerBlock) {
  // Payload: tokenIds, positions, tokenSeq [T]; logitRows [R]; then per sequence its block count and
  // blocks (as many as its highest position this step needs: attention reads no further).
  std::vector<int32_t> payload;
  const int32_t T = step.numTokens;
  payload.reserve(static_cast<size_t>(T) * 3 + static_cast<size_t>(step.numLogitRows) + static_cast<size_t>(step.numSeqs) * 2);
  payload.insert(payload.end(), step.tokenIds, step.tokenIds + T);
  payload.insert(payload.end(), step.positions, step.positions + T);
  payload.insert(payload.end(), step.tokenSeq, step.tokenSeq + T);
  payload.insert(payload.end(), step.logitRows, step.logitRows + step.numLogitRows);
  std::vector<int32_t> lastPosition(static_cast<size_t>(step.numSeqs), -1);
  for (int32_t t = 0; t < T; ++t) {
    int32_t& last = lastPosition[static_cast<size_t>(step.tokenSeq[t])];
    last = std::max(last, step.positions[t]);
  }
  for (int32_t s = 0; s < step.numSeqs; ++s) {
    const int32_t blocks = lastPosition[static_cast<size_t>(s)] / tokensPerBlock + 1;
    payload.push_back(blocks);
    payload.insert(payload.end(), step.blockTables[s], step.blockTables[s] + blocks);
  }
  Announcement a;
  a.command = static_cast<int32_t>(RankCommand::Step);
  a.numTokens = T;
  a.numSeqs = step.numSeqs;
  a.numLogitRows = step.numLogitRows;
  a.payloadInts = static_cast<int32_t>(payload.size());
  control.broadcast(&a, sizeof a, 0);
  control.broadcast(payload.data(), payload.size() * sizeof(int32_t), 0);
}

void announceKvCopy(comm::Communicator& control, int32_t src, int32_t dst) {
  Announcement a;
  a.command = static_cast<int32_t>(RankCommand::CopyKvBlock);
  a.copySrc = src;
  a.copyDst = dst;
  control.broadcast(&a, sizeof a, 0);
}

void announceStop(comm::Communicator& control) {
  Announcement a;
  a.command = static_cast<int32_t>(RankCommand::Stop);
  control.broadcast(&a, sizeof a, 0);
}

RankCommand ScheduleReceiver::receive(comm::Communicator& control, const ScheduleLimits& limits) {
  const int32_t numBlocks = limits.numBlocks;
  Announcement a;
  control.broadcast(&a, sizeof a, 0);
  // Rank 0 is the same program, but its messages are still checked: a mismatch here would otherwise
  // index the KV pool out of bounds.
  auto bad = [](const std::string& what) { return std::runtime_error("rank 0 announced " + what); };
  switch (static_cast<RankCommand>(a.command)) {
    case RankCommand::Stop:
      return RankCommand::Stop;
    case RankCommand::CopyKvBlock:
      if (a.copySrc < 0 || a.copySrc >= numBlocks || a.copyDst < 0 || a.copyDst >= numBlocks) throw bad("a KV block copy out of range");
      copy_[0] = a.copySrc;
      copy_[1] = a.copyDst;
      return RankCommand::CopyKvBlock;
    case RankCommand::Step:
      break;
    default:
      throw bad("an unknown command " + std::to_string(a.command));
  }
  if (a.numTokens < 1 || a.numSeqs < 1 || a.numLogitRows < 0 || a.payloadInts < 0 || a.numSeqs > a.numTokens ||
      a.numTokens > limits.maxNumTokens || a.numLogitRows > limits.maxLogitRows || a.numSeqs > limits.maxBatchSize ||
      a.payloadInts > (1 << 28)) {
    throw bad("a step of impossible sizes");
  }
  payload_.resize(static_cast<size_t>(a.payloadInts));
  control.broadcast(payload_.data(), payload_.size() * sizeof(int32_t), 0);
  const size_t T = static_cast<size_t>(a.numTokens);
  size_t at = T * 3 + static_cast<size_t>(a.numLogitRows);
  if (payload_.size() < at) throw bad("a step shorter than its sizes");
  const int32_t* p = payload_.data();
  tables_.assign(static_cast<size_t>(a.numSeqs), nullptr);
  for (int32_t s = 0; s < a.numSeqs; ++s) {
    if (at >= payload_.size()) throw bad("a step shorter than its block tables");
    const int32_t blocks = p[at++];
    if (blocks < 1 || static_cast<size_t>(blocks) > payload_.size() - at) throw bad("a block table past the step's end");
    for (int32_t b = 0; b < blocks; ++b) {
      if (p[at + static_cast<size_t>(b)] < 0 || p[at + static_cast<size_t>(b)] >= numBlocks) throw bad("a KV block out of range");
    }
    tables_[static_cast<size_t>(s)] = p + at;
    at += static_cast<size_t>(blocks);
  }
  tableLengths_.assign(static_cast<size_t>(a.numSeqs), 0);
  for (int32_t s = 0; s < a.numSeqs; ++s) tableLengths_[static_cast<size_t>(s)] = tables_[static_cast<size_t>(s)][-1];
  for (size_t t = 0; t < T; ++t) {
    const int32_t seq = p[2 * T + t];
    if (seq < 0 || seq >= a.numSeqs) throw bad("a token of no sequence");
    if (p[t] < 0 || p[t] >= limits.vocabSize) throw bad("a token id outside the vocabulary");
    const int32_t position = p[T + t];
    if (position < 0 || position >= limits.maxSeqLen || position / limits.tokensPerBlock >= tableLengths_[static_cast<size_t>(seq)]) {
      throw bad("a position past its block table");
    }
  }
  for (int32_t r = 0; r < a.numLogitRows; ++r) {
    if (p[3 * T + static_cast<size_t>(r)] < 0 || p[3 * T + static_cast<size_t>(r)] >= a.numTokens) throw bad("a logit row out of range");
  }
  step_ = StepContext();
  step_.numTokens = a.numTokens;
  step_.tokenIds = p;
  step_.positions = p + T;
  step_.tokenSeq = p + 2 * T;
  step_.numSeqs = a.numSeqs;
  step_.blockTables = tables_.data();
  step_.numLogitRows = a.numLogitRows;
  step_.logitRows = p + 3 * T;
  return RankCommand::Step;
}

}  // namespace kiln
