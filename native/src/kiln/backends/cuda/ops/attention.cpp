// attention: the step's K/V into the device KV cache, then paged attention over the block tables; and
// gather_rows, which picks the LM head's rows.
#include "kiln/backends/cuda/ops/ops.h"

namespace kiln {
namespace cuda {
namespace ops {

BoundOp bindAttention(OpBinding& b) {
  const spec::Attention s = spec::attention(b);
  if (s.headDim > 512) b.fail("headDim above 512 is not supported by the cuda attention kernel");
  CudaBackend* be = &backendOf(b);
  const Matrix q = be->value(s.q);
  const Matrix k = be->value(s.k);
  const Matrix v = be->value(s.v);
  const Matrix out = be->value(s.out);
  return [=](const StepRuntime& rt) {
    attention(be->stream(), be->kvDType(), deviceStep(rt), be->kv(), s.layer, q, k, v, s.numHeads, s.numKvHeads,
              s.headDim, s.scale, s.slidingWindow, s.softcap, s.alibiSlopes, out);
  };
}

BoundOp bindGatherRows(OpBinding& b) {
  const spec::GatherRows s = spec::gatherRows(b);
  CudaBackend* be = &backendOf(b);
  const Matrix x = be->value(s.x);
  const Matrix y = be->value(s.y);
  return [=](const StepRuntime& rt) {
    gatherRows(be->stream(), x, deviceStep(rt).logitRows, rt.step->numLogitRows, s.x.cols, y);
  };
}

}  // namespace ops
}  // namespace cuda
}  // namespace kiln
