// attention: stores the step's K/V into layer `layer` of the paged KV cache, then attends causally.
#include "kiln/backends/cpu/ops/ops.h"

namespace kiln {
namespace ops {

BoundOp bindAttention(OpBinding& b) {
  const spec::Attention s = spec::attention(b);
  if (s.kvStored) b.fail("attribute \"kvStored\" is for cuda engines only");
  AttentionExtras extras;
  extras.softcap = s.softcap;
  extras.alibiSlopes = s.alibiSlopes;
  extras.roundF16 = s.llamaCppF16;
  return [s, extras](const StepRuntime& rt) {
    attentionKernel(rt.env, *rt.step, s.layer, s.q.data, s.q.rowStride, s.k.data, s.k.rowStride, s.v.data,
                    s.v.rowStride, s.numHeads, s.numKvHeads, s.headDim, s.scale, s.slidingWindow, extras, s.out.data,
                    s.out.rowStride);
  };
}

}  // namespace ops
}  // namespace kiln
