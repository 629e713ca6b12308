// embedding and position_embedding: row gathers from a table in device memory.
#include <stdexcept>

#include "kiln/backends/cuda/ops/ops.h"

namespace kiln {
namespace cuda {
namespace ops {

BoundOp bindEmbedding(OpBinding& b) {
  const spec::Embedding s = spec::embedding(b);
  CudaBackend* be = &backendOf(b);
  const Matrix out = be->value(s.out);
  return [=](const StepRuntime& rt) {
    embedding(be->stream(), deviceStep(rt).tokenIds, rt.step->numTokens, s.table, s.dtype, s.hidden, s.scale, out);
  };
}

BoundOp bindPositionEmbedding(OpBinding& b) {
  const spec::PositionEmbedding s = spec::positionEmbedding(b);
  CudaBackend* be = &backendOf(b);
  const Matrix out = be->value(s.out);
  // A table shorter than maxSeqLen (+ offset) can fail a step on the host check below, which a
  // replayed CUDA graph would skip.
  if (s.tableRows - s.offset < b.facts().maxSeqLen) be->disallowGraphs();
  return [=](const StepRuntime& rt) {
    // Checked on the host before anything is enqueued, as the CPU kernel does before it writes.
    const StepContext& step = *rt.step;
    for (int32_t t = 0; t < step.numTokens; ++t) {
      const int64_t row = static_cast<int64_t>(step.positions[t]) + s.offset;
      if (row < 0 || row >= s.tableRows) throw std::runtime_error(spec::positionPastTable(s, step.positions[t]));
    }
    positionEmbedding(be->stream(), deviceStep(rt).positions, step.numTokens, s.offset, s.table, s.dtype, s.hidden, out);
  };
}

}  // namespace ops
}  // namespace cuda
}  // namespace kiln
