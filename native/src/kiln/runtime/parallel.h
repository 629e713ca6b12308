#pragma once
// Tensor and pipeline parallelism in the runtime: which rank this engine is (the header's `mapping`),
// the communicators its ops use, and the schedule rank 0 broadcasts so that every other rank runs the
// same steps in the same order. Rank 0 owns the executor; the other ranks run Engine::follow(), which
// replays each step (and each KV block copy) rank 0 announces, until rank 0 announces the end.
// Design: docs/decisions/0010-tensor-and-pipeline-parallelism.md.
#include <cstdint>
#include <memory>
#include <vector>

#include "kiln/comm/communicator.h"
#include "kiln/format/json.h"
#include "kiln/runtime/step.h"

namespace kiln {

class Backend;

// rank = ppRank * tpSize + tpRank, as TensorRT-LLM numbers ranks.
struct ParallelMapping {
  int tpSize = 1;
  int ppSize = 1;
  int rank = 0;
  int worldSize() const { return tpSize * ppSize; }
  int tpRank() const { return rank % tpSize; }
  int ppRank() const { return rank / tpSize; }
};

// The header's optional `mapping` ({ "tpSize", "ppSize", "rank" }); absent: one rank.
ParallelMapping readMapping(const Json& header);

class ParallelGroups {
 public:
  // Checks that this process is `mapping.rank` of `mapping.worldSize()` mpirun ranks (the error says how
  // to launch it otherwise) and forms the tensor-parallel group of this rank's pipeline stage.
  explicit ParallelGroups(const ParallelMapping& mapping);

  const ParallelMapping& mapping() const { return mapping_; }
  bool isLeader() const { return mapping_.rank == 0; }
  // Once the backend exists, before any op binds: the ops' communicators become the backend's device
  // communicators (NCCL on CUDA) where it has them. Collective: every rank calls it at the same point.
  void useDeviceCommunicators(Backend& backend);

  // Host messages between the ranks: the schedule, the KV pool's size. Always MPI.
  comm::Communicator& control() { return *world_; }
  // The ops' collectives: the stage's tensor-parallel ranks, and every rank (pipeline send/recv,
  // peers numbered by global rank).
  comm::Communicator& tensorParallel() { return tpDevice_ ? *tpDevice_ : *tp_; }
  comm::Communicator& pipeline() { return pipelineDevice_ ? *pipelineDevice_ : *world_; }

 private:
  ParallelMapping mapping_;
  comm::Communicator* world_ = nullptr;
  std::unique_ptr<comm::Communicator> tp_;
  std::unique_ptr<comm::Communicator> tpDevice_, pipelineDevice_;
};

// What rank 0 announces before each thing every rank must do together.
enum class RankCommand : int32_t { Step = 1, CopyKvBlock = 2, Stop = 3 };

// Rank 0's side.
void announceStep(comm::Communicator& control, const StepContext& step, int32_t tokensPerBlock);
void announceKvCopy(comm::Communicator& control, int32_t src, int32_t dst);
void announceStop(comm::Communicator& control);

// What a received step is checked against (this rank's engine and KV pool).
struct ScheduleLimits {
  int32_t numBlocks = 0;
  int32_t tokensPerBlock = 1;
  int64_t vocabSize = 0;
  int64_t maxSeqLen = 0;
  int64_t maxNumTokens = 0;
  int64_t maxLogitRows = 0;
  int64_t maxBatchSize = 0;
};

// The other ranks' side: the next command and, for a step, its contents (valid until the next call).
class ScheduleReceiver {
 public:
  RankCommand receive(comm::Communicator& control, const ScheduleLimits& limits);
  const StepContext& step() const { return step_; }
  int32_t copySource() const { return copy_[0]; }
  int32_t copyTarget() const { return copy_[1]; }

 private:
  std::vector<int32_t> payload_;
  std::vector<const int32_t*> tables_;
  std::vector<int32_t> tableLengths_;
  StepContext step_;
  int32_t copy_[2] = {0, 0};
};

}  // namespace kiln
