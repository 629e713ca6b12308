// rms_norm and layer_norm.
#include "kiln/backends/cuda/ops/ops.h"

namespace kiln {
namespace cuda {
namespace ops {

BoundOp bindRmsNorm(OpBinding& b) {
  const spec::RmsNorm s = spec::rmsNorm(b);
  expectActivationDType(b, s.dtype, "weight");
  CudaBackend* be = &backendOf(b);
  const void* x = be->value(s.x);
  void* y = be->value(s.y);
  return [=](const StepRuntime& rt) {
    rmsNorm(be->stream(), be->dtype(), x, s.x.numRows(*rt.step), s.x.rowStride, s.weight, s.numGroups, s.groupSize, s.eps,
            s.weightOffset, y, s.y.rowStride);
  };
}

BoundOp bindLayerNorm(OpBinding& b) {
  const spec::LayerNorm s = spec::layerNorm(b);
  expectActivationDType(b, s.dtype, "weight");
  CudaBackend* be = &backendOf(b);
  const void* x = be->value(s.x);
  void* y = be->value(s.y);
  return [=](const StepRuntime& rt) {
    layerNorm(be->stream(), be->dtype(), x, s.x.numRows(*rt.step), s.x.rowStride, s.weight, s.bias, s.H, s.eps, y,
              s.y.rowStride);
  };
}

}  // namespace ops
}  // namespace cuda
}  // namespace kiln
