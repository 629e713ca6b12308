// rms_norm and layer_norm.
#include "kiln/backends/cuda/ops/ops.h"

namespace kiln {
namespace cuda {
namespace ops {

BoundOp bindRmsNorm(OpBinding& b) {
  const spec::RmsNorm s = spec::rmsNorm(b);
  CudaBackend* be = &backendOf(b);
  const Matrix x = be->value(s.x);
  const Matrix y = be->value(s.y);
  return [=](const StepRuntime& rt) {
    rmsNorm(be->stream(), x, s.x.numRows(*rt.step), s.weight, s.dtype, s.numGroups, s.groupSize, s.eps, s.weightOffset, y);
  };
}

BoundOp bindLayerNorm(OpBinding& b) {
  const spec::LayerNorm s = spec::layerNorm(b);
  CudaBackend* be = &backendOf(b);
  const Matrix x = be->value(s.x);
  const Matrix y = be->value(s.y);
  return [=](const StepRuntime& rt) {
    layerNorm(be->stream(), x, s.x.numRows(*rt.step), s.weight, s.dtype, s.bias, s.H, s.eps, y);
  };
}

}  // namespace ops
}  // namespace cuda
}  // namespace kiln
