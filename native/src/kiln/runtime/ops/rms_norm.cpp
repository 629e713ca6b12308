// rms_norm: y = x / sqrt(mean(x^2) + eps) * (weightOffset + weight), row by row.
#include <cmath>

#include "kiln/runtime/ops/ops.h"

namespace kiln {
namespace ops {

BoundOp bindRmsNorm(OpBinding& b) {
  b.expectArity(1, 1);
  const WeightRef& w = b.weight("weight");
  if (w.shape.size() != 1) b.fail("weight \"weight\" (\"" + w.name + "\") must be 1-D [hidden]");
  // groupSize: each consecutive group of that many features is normalised on its own, all groups
  // sharing weight [groupSize] (Qwen3's per-head q/k norm). Default: the whole row.
  // Absent (or 0): the whole row, so the input must be exactly as wide as the weight.
  const int64_t groupAttr = b.attrInt("groupSize", 0, int64_t(1) << 31, 0);
  const int64_t groupSize = groupAttr == 0 ? w.shape[0] : groupAttr;
  if (groupAttr == 0) b.expectCols(b.input(0), groupSize, "input 0");
  if (groupSize != w.shape[0]) {
    b.fail("weight \"weight\" (\"" + w.name + "\") has " + std::to_string(w.shape[0]) +
           " elements but attribute \"groupSize\" is " + std::to_string(groupSize));
  }
  const ValueRef& in = b.input(0);
  const ValueRef& out = b.output(0);
  const int64_t H = in.cols;
  if (H % groupSize != 0) {
    b.fail("input 0 (value " + std::to_string(in.index) + " \"" + in.name + "\") has " + std::to_string(H) +
           " cols, not a multiple of groupSize " + std::to_string(groupSize));
  }
  const int64_t numGroups = H / groupSize;
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
    rmsNormGroupsKernel(rt.env, x, n, xStride, wData, wdt, numGroups, groupSize, epsF, offsetF, y, yStride);
  };
}

}  // namespace ops
}  // namespace kiln
