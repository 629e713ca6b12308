// add_rms_norm and add_layer_norm: the residual add, then the norm of its sum. On the CPU the two kernels
// run back to back, so the results are those of the unfused ops, bit for bit.
#include "kiln/backends/cpu/ops/ops.h"

namespace kiln {
namespace ops {

BoundOp bindAddRmsNorm(OpBinding& b) {
  const spec::AddRmsNorm s = spec::addRmsNorm(b);
  return [s](const StepRuntime& rt) {
    const int64_t rows = s.a.numRows(*rt.step);
    const spec::RmsNorm& n = s.norm;
    addKernel(rt.env, s.a.data, s.a.rowStride, s.b.data, s.b.rowStride, rows, s.a.cols, n.x.data, n.x.rowStride);
    rmsNormGroupsKernel(rt.env, n.x.data, rows, n.x.rowStride, n.weight, n.dtype, n.numGroups, n.groupSize, n.eps,
                        n.weightOffset, n.y.data, n.y.rowStride);
  };
}

BoundOp bindAddLayerNorm(OpBinding& b) {
  const spec::AddLayerNorm s = spec::addLayerNorm(b);
  return [s](const StepRuntime& rt) {
    const int64_t rows = s.a.numRows(*rt.step);
    const spec::LayerNorm& n = s.norm;
    addKernel(rt.env, s.a.data, s.a.rowStride, s.b.data, s.b.rowStride, rows, s.a.cols, n.x.data, n.x.rowStride);
    layerNormKernel(rt.env, n.x.data, rows, n.x.rowStride, n.weight, n.dtype, n.bias, n.H, n.eps, n.y.data, n.y.rowStride);
  };
}

}  // namespace ops
}  // namespace kiln
