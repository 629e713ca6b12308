// rms_norm: y = x / sqrt(mean(x^2) + eps) * (weightOffset + weight), row by row or group by group.
#include "kiln/backends/cpu/ops/ops.h"

namespace kiln {
namespace ops {

BoundOp bindRmsNorm(OpBinding& b) {
  const spec::RmsNorm s = spec::rmsNorm(b);
  return [s](const StepRuntime& rt) {
    rmsNormGroupsKernel(rt.env, s.x.data, s.x.numRows(*rt.step), s.x.rowStride, s.weight, s.dtype, s.numGroups,
                        s.groupSize, s.eps, s.weightOffset, s.y.data, s.y.rowStride);
  };
}

}  // namespace ops
}  // namespace kiln
