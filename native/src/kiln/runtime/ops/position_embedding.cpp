// position_embedding: out[t, :] = table[positions[t] + offset, :] for the step's positions (learned
// absolute positions; OPT's table starts at offset 2). A position past the table fails the step.
#include <stdexcept>
#include <string>

#include "kiln/runtime/ops/ops.h"

namespace kiln {
namespace ops {

BoundOp bindPositionEmbedding(OpBinding& b) {
  b.expectArity(0, 1);
  const WeightRef& table = b.weight("table");
  if (table.shape.size() != 2) b.fail("weight \"table\" (\"" + table.name + "\") must be 2-D [positions, hidden]");
  const int64_t tableRows = table.shape[0];
  const int64_t hidden = table.shape[1];
  const int64_t offset = b.attrInt("offset", 0, int64_t(1) << 31, 0);
  const ValueRef& out = b.output(0);
  b.expectRows(out, RowsKind::Tokens, "output 0");
  b.expectCols(out, hidden, "output 0");

  const std::string name = table.name;
  const void* data = table.data;
  const DType dt = table.dtype;
  float* y = out.data;
  const int64_t yStride = out.rowStride;
  return [=](const StepRuntime& rt) {
    const StepContext& step = *rt.step;
    const int64_t bad = positionEmbeddingKernel(rt.env, step.positions, step.numTokens, offset, data, dt, tableRows,
                                                hidden, y, yStride);
    // Thrown on the step's own thread (the kernel checks before it starts any worker): generate() fails
    // with this message and releases the sequence's cache blocks.
    if (bad >= 0) {
      throw std::runtime_error("position_embedding: position " + std::to_string(step.positions[bad]) +
                               (offset ? " + offset " + std::to_string(offset) : std::string()) +
                               " is beyond the " + std::to_string(tableRows) + " rows of weight \"" + name + "\"");
    }
  };
}

}  // namespace ops
}  // namespace kiln
