// rms_norm: y = x / sqrt(mean(x^2) + eps) * (weightOffset + weight), row by row.
#include <cmath>

#include "kiln/runtime/ops/ops.h"

namespace kiln {
namespace ops {

BoundOp bindRmsNorm(OpBinding& b) {
  b.expectArity(1, 1);
  const WeightRef& w = b.weight("weight");
  if (w.shape.size() != 1) b.fail("weight \"weight\" (\"" + w.name + "\") must be 1-D [hidden]");
  const int64_t H = w.shape[0];
  const ValueRef& in = b.input(0);
  const ValueRef& out = b.output(0);
  b.expectCols(in, H, "input 0");
  b.expectRows(out, in.rows, "output 0");
  b.expectCols(out, H, "output 0");
  const double eps = b.attrNumber("eps");
  if (eps < 0) b.fail("attribute \"eps\" must be >= 0");
  const double weightOffset = b.attrNumber("weightOffset", 0.0);

  const RowsKind rows = in.rows;
  const float* x = in.data;
  const int64_t xStride = in.rowStride;
  const void* wData = w.data;
  const DType wdt = w.dtype;
  float* y = out.data;
  const int64_t yStride = out.rowStride;
  const float epsF = static_cast<float>(eps);
  const float offsetF = static_cast<float>(weightOffset);
  return [=](const StepRuntime& rt) {
    const int64_t n = rows == RowsKind::Tokens ? rt.step->numTokens : rt.step->numLogitRows;
    rmsNormKernel(rt.env, x, n, xStride, wData, wdt, H, epsF, offsetF, y, yStride);
  };
}

}  // namespace ops
}  // namespace kiln
