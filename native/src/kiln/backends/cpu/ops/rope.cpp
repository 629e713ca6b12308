// rope: rotary position embedding of each head of x [T, numHeads * headDim] at the step's positions.
#include "kiln/backends/cpu/ops/ops.h"

namespace kiln {
namespace ops {

BoundOp bindRope(OpBinding& b) {
  const spec::Rope s = spec::rope(b);
  return [s](const StepRuntime& rt) {
    ropeKernel(rt.env, s.x.data, rt.step->numTokens, s.x.rowStride, rt.step->positions, s.numHeads, s.headDim,
               s.rotaryDim, s.interleaved, s.invFreq, s.attentionScaling, s.y.data, s.y.rowStride, s.llamaCppThetaBase);
  };
}

}  // namespace ops
}  // namespace kiln
