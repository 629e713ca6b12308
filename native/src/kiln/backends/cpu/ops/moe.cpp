// moe: Mixtral's sparse mixture of SwiGLU experts over x [R, H] (see moeKernel).
#include "kiln/backends/cpu/ops/ops.h"

namespace kiln {
namespace ops {

BoundOp bindMoe(OpBinding& b) {
  const spec::Moe s = spec::moe(b);
  return [s](const StepRuntime& rt) {
    moeKernel(rt.env, s.x.data, s.x.numRows(*rt.step), s.x.rowStride, s.router, s.routerDType, s.gate, s.up, s.down,
              s.expertDType, s.numExperts, s.hidden, s.intermediate, s.topK, s.normalizeTopK, s.y.data, s.y.rowStride);
  };
}

}  // namespace ops
}  // namespace kiln
