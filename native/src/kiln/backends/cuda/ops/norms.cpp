// rms_norm and layer_norm, alone or fused with the residual add before them.
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

BoundOp bindAddRmsNorm(OpBinding& b) {
  const spec::AddRmsNorm s = spec::addRmsNorm(b);
  CudaBackend* be = &backendOf(b);
  const Matrix a = be->value(s.a), c = be->value(s.b), sum = be->value(s.norm.x), y = be->value(s.norm.y);
  return [=](const StepRuntime& rt) {
    addRmsNorm(be->stream(), a, c, s.a.numRows(*rt.step), s.norm.groupSize, s.norm.weight, s.norm.dtype, s.norm.eps,
               s.norm.weightOffset, sum, y);
  };
}

BoundOp bindAddLayerNorm(OpBinding& b) {
  const spec::AddLayerNorm s = spec::addLayerNorm(b);
  CudaBackend* be = &backendOf(b);
  const Matrix a = be->value(s.a), c = be->value(s.b), sum = be->value(s.norm.x), y = be->value(s.norm.y);
  return [=](const StepRuntime& rt) {
    addLayerNorm(be->stream(), a, c, s.a.numRows(*rt.step), s.norm.H, s.norm.weight, s.norm.dtype, s.norm.bias, s.norm.eps,
                 sum, y);
  };
}

}  // namespace ops
}  // namespace cuda
}  // namespace kiln
