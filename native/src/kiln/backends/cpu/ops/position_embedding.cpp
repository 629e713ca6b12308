// position_embedding: out[t, :] = table[positions[t] + offset, :] for the step's positions (learned
// absolute positions; OPT's table starts at offset 2). A position past the table fails the step.
#include <stdexcept>
#include <string>

#include "kiln/backends/cpu/ops/ops.h"

namespace kiln {
namespace ops {

BoundOp bindPositionEmbedding(OpBinding& b) {
  const spec::PositionEmbedding s = spec::positionEmbedding(b);
  return [s](const StepRuntime& rt) {
    const StepContext& step = *rt.step;
    const int64_t bad = positionEmbeddingKernel(rt.env, step.positions, step.numTokens, s.offset, s.table, s.dtype,
                                                s.tableRows, s.hidden, s.out.data, s.out.rowStride);
    // Thrown on the step's own thread (the kernel checks before it starts any worker): generate() fails
    // with this message and releases the sequence's cache blocks.
    if (bad >= 0) throw std::runtime_error(spec::positionPastTable(s, step.positions[bad]));
  };
}

}  // namespace ops
}  // namespace kiln
