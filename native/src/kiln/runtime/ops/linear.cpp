// linear: y[R, N] = x[R, K] . weight[N, K]^T (+ bias[N]); works on token rows or logit rows alike.
#include "kiln/runtime/ops/ops.h"

namespace kiln {
namespace ops {

BoundOp bindLinear(OpBinding& b) {
  b.expectArity(1, 1);
  const WeightRef& w = b.weight("weight");
  if (w.shape.size() != 2) b.fail("weight \"weight\" (\"" + w.name + "\") must be 2-D [N, K]");
  const int64_t N = w.shape[0];
  const int64_t K = w.shape[1];
  const WeightRef* bias = b.optionalWeight("bias");
  if (bias) {
    b.expectDType(*bias, DType::F32, "bias");
    b.expectShape(*bias, {N}, "bias");
  }
  const ValueRef& in = b.input(0);
  const ValueRef& out = b.output(0);
  b.expectCols(in, K, "input 0");
  b.expectRows(out, in.rows, "output 0");
  b.expectCols(out, N, "output 0");

  const ValueRef x = in;
  const float* x0 = in.data;
  const int64_t xStride = in.rowStride;
  const void* wData = w.data;
  const DType wdt = w.dtype;
  const float* biasData = bias ? static_cast<const float*>(bias->data) : nullptr;
  float* y = out.data;
  const int64_t yStride = out.rowStride;
  return [=](const StepRuntime& rt) {
    linearKernel(rt.env, x0, x.numRows(*rt.step), xStride, wData, wdt, N, K, biasData, y, yStride);
  };
}

}  // namespace ops
}  // namespace kiln
