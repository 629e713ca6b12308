#pragma once
// The ops of tensor and pipeline parallelism (docs/engine-format.md, "Parallel ops"), read once for every
// backend as op_specs.h reads the others. They exist only in engines with a `mapping` of more than one
// rank; the communicators they use come from ModelFacts::parallel.
#include <cstdint>

#include "kiln/comm/communicator.h"
#include "kiln/runtime/kernel_registry.h"

namespace kiln {
namespace spec {

// all_reduce: y = the sum of x over the stage's tensor-parallel ranks (row-parallel linears, the
// vocabulary-split embedding, split MoE experts).
struct AllReduce {
  ValueRef x, y;
  int64_t maxRows;
  comm::Communicator* group;
};
AllReduce allReduce(OpBinding& b);

// all_gather: y [rows, cols * tp] = the tensor-parallel ranks' x [rows, cols] side by side in rank order
// (the column-split LM head).
struct AllGather {
  ValueRef x, y;
  int64_t maxRows;
  comm::Communicator* group;
};
AllGather allGather(OpBinding& b);

// vocab_parallel_embedding: out[t] = table[id - vocabStart] * scale for the ids of this rank's rows
// [vocabStart, vocabStart + rows), zeros for the others (an all_reduce follows: the token embedding split
// by vocabulary).
struct VocabParallelEmbedding {
  ValueRef out;
  const void* table;
  DType dtype;
  int64_t rows, hidden, vocabStart;
  float scale;
};
VocabParallelEmbedding vocabParallelEmbedding(OpBinding& b);

// send / recv: a pipeline stage's activations to / from global rank `peer`.
struct PeerTransfer {
  ValueRef value;
  int64_t maxRows;
  int peer;
  comm::Communicator* pipeline;
};
PeerTransfer send(OpBinding& b);
PeerTransfer recv(OpBinding& b);

}  // namespace spec
}  // namespace kiln
