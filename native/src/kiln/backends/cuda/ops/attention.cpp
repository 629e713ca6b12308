// attention: the step's K/V into the device KV cache, then paged attention over the block tables.
#include "kiln/backends/cuda/ops/ops.h"

namespace kiln {
namespace cuda {
namespace ops {

BoundOp bindAttention(OpBinding& b) {
  const spec::Attention s = spec::attention(b);
  if (s.headDim > 512) b.fail("headDim above 512 is not supported by the cuda attention kernel");
  CudaBackend* be = &backendOf(b);
  const void* q = be->value(s.q);
  const void* k = be->value(s.k);
  const void* v = be->value(s.v);
  void* out = be->value(s.out);
  return [=](const StepRuntime& rt) {
    attention(be->stream(), be->dtype(), deviceStep(rt), be->kv(), s.layer, q, s.q.rowStride, k, s.k.rowStride, v,
              s.v.rowStride, s.numHeads, s.numKvHeads, s.headDim, s.scale, s.slidingWindow, s.softcap, s.alibiSlopes, out,
              s.out.rowStride);
  };
}

BoundOp bindGatherRows(OpBinding& b) {
  const spec::GatherRows s = spec::gatherRows(b);
  CudaBackend* be = &backendOf(b);
  const void* x = be->value(s.x);
  void* y = be->value(s.y);
  return [=](const StepRuntime& rt) {
    gatherRows(be->stream(), be->dtype(), x, s.x.rowStride, deviceStep(rt).logitRows, rt.step->numLogitRows, s.x.cols, y,
               s.y.rowStride);
  };
}

}  // namespace ops
}  // namespace cuda
}  // namespace kiln
