// rope: rotary position embedding at the step's positions (device copy).
#include "kiln/backends/cuda/ops/ops.h"

namespace kiln {
namespace cuda {
namespace ops {

BoundOp bindRope(OpBinding& b) {
  const spec::Rope s = spec::rope(b);
  CudaBackend* be = &backendOf(b);
  const Matrix x = be->value(s.x);
  const Matrix y = be->value(s.y);
  return [=](const StepRuntime& rt) {
    rope(be->stream(), x, rt.step->numTokens, deviceStep(rt).positions, s.numHeads, s.headDim, s.rotaryDim,
         s.interleaved, s.invFreq, s.attentionScaling, y);
  };
}

}  // namespace ops
}  // namespace cuda
}  // namespace kiln
