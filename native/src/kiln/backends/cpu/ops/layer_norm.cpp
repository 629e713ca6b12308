// layer_norm: y = (x - mean) / sqrt(var + eps) * weight + bias, row by row (torch.nn.LayerNorm).
#include "kiln/backends/cpu/ops/ops.h"

namespace kiln {
namespace ops {

BoundOp bindLayerNorm(OpBinding& b) {
  const spec::LayerNorm s = spec::layerNorm(b);
  return [s](const StepRuntime& rt) {
    layerNormKernel(rt.env, s.x.data, s.x.numRows(*rt.step), s.x.rowStride, s.weight, s.dtype, s.bias, s.H, s.eps,
                    s.y.data, s.y.rowStride);
  };
}

}  // namespace ops
}  // namespace kiln
