// gather_rows: picks the step's logit rows (StepContext::logitRows) out of the token rows.
#include "kiln/backends/cpu/ops/ops.h"

namespace kiln {
namespace ops {

BoundOp bindGatherRows(OpBinding& b) {
  const spec::GatherRows s = spec::gatherRows(b);
  return [s](const StepRuntime& rt) {
    gatherRowsKernel(rt.env, s.x.data, s.x.rowStride, rt.step->logitRows, rt.step->numLogitRows, s.x.cols, s.y.data,
                     s.y.rowStride);
  };
}

}  // namespace ops
}  // namespace kiln
