// linear: y[R, N] = x[R, K] . weight[N, K]^T (+ bias[N]); works on token rows or logit rows alike.
#include "kiln/backends/cpu/ops/ops.h"

namespace kiln {
namespace ops {

BoundOp bindLinear(OpBinding& b) {
  const spec::Linear s = spec::linear(b);
  return [s](const StepRuntime& rt) {
    linearKernel(rt.env, s.x.data, s.x.numRows(*rt.step), s.x.rowStride, s.weight, s.dtype, s.N, s.K, s.bias, s.y.data,
                 s.y.rowStride);
  };
}

}  // namespace ops
}  // namespace kiln
