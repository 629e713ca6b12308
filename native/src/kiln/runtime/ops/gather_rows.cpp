// gather_rows: picks the step's logit rows (StepContext::logitRows) out of the token rows, so that the
// LM head only runs over the rows whose logits are wanted.
#include "kiln/runtime/ops/ops.h"

namespace kiln {
namespace ops {

BoundOp bindGatherRows(OpBinding& b) {
  b.expectArity(1, 1);
  const ValueRef& in = b.input(0);
  const ValueRef& out = b.output(0);
  b.expectRows(in, RowsKind::Tokens, "input 0");
  b.expectRows(out, RowsKind::LogitRows, "output 0");
  b.expectCols(out, in.cols, "output 0");

  const float* x = in.data;
  const int64_t xs = in.rowStride;
  const int64_t cols = in.cols;
  float* y = out.data;
  const int64_t ys = out.rowStride;
  return [=](const StepRuntime& rt) {
    gatherRowsKernel(rt.env, x, xs, rt.step->logitRows, rt.step->numLogitRows, cols, y, ys);
  };
}

}  // namespace ops
}  // namespace kiln
