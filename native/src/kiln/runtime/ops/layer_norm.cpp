// layer_norm: y = (x - mean) / sqrt(var + eps) * weight + bias, row by row (torch.nn.LayerNorm).
#include "kiln/runtime/ops/ops.h"

namespace kiln {
namespace ops {

BoundOp bindLayerNorm(OpBinding& b) {
  b.expectArity(1, 1);
  const WeightRef& w = b.weight("weight");
  if (w.shape.size() != 1) b.fail("weight \"weight\" (\"" + w.name + "\") must be 1-D [hidden]");
  const int64_t H = w.shape[0];
  const WeightRef* bias = b.optionalWeight("bias");
  if (bias) {
    b.expectDType(*bias, DType::F32, "bias");
    b.expectShape(*bias, {H}, "bias");
  }
  const ValueRef& in = b.input(0);
  const ValueRef& out = b.output(0);
  b.expectCols(in, H, "input 0");
  b.expectRows(out, in.rows, "output 0");
  b.expectCols(out, H, "output 0");
  const double eps = b.attrNumber("eps");
  if (eps < 0) b.fail("attribute \"eps\" must be >= 0");

  const ValueRef shape = in;
  const float* x = in.data;
  const int64_t xStride = in.rowStride;
  const void* wData = w.data;
  const DType wdt = w.dtype;
  const float* biasData = bias ? static_cast<const float*>(bias->data) : nullptr;
  float* y = out.data;
  const int64_t yStride = out.rowStride;
  const float epsF = static_cast<float>(eps);
  return [=](const StepRuntime& rt) {
    layerNormKernel(rt.env, x, shape.numRows(*rt.step), xStride, wData, wdt, biasData, H, epsF, y, yStride);
  };
}

}  // namespace ops
}  // namespace kiln
