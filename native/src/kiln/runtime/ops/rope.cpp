// rope: rotary position embedding of each head of x [T, numHeads * headDim] at the step's positions.
#include "kiln/runtime/ops/ops.h"

namespace kiln {
namespace ops {

BoundOp bindRope(OpBinding& b) {
  b.expectArity(1, 1);
  const int64_t numHeads = b.attrInt("numHeads", 1, 1 << 16);
  const int64_t headDim = b.attrInt("headDim", 1, 1 << 16);
  const int64_t rotaryDim = b.attrInt("rotaryDim", 2, headDim);
  if (rotaryDim % 2 != 0) b.fail("attribute \"rotaryDim\" must be even, got " + std::to_string(rotaryDim));
  const bool interleaved = b.attrBool("interleaved", false);
  const float attentionScaling = static_cast<float>(b.attrNumber("attentionScaling", 1.0));
  const WeightRef& invFreq = b.weight("invFreq");
  b.expectDType(invFreq, DType::F32, "invFreq");
  b.expectShape(invFreq, {rotaryDim / 2}, "invFreq");
  const ValueRef& in = b.input(0);
  const ValueRef& out = b.output(0);
  b.expectRows(in, RowsKind::Tokens, "input 0");
  b.expectCols(in, numHeads * headDim, "input 0");
  b.expectRows(out, RowsKind::Tokens, "output 0");
  b.expectCols(out, numHeads * headDim, "output 0");

  const float* x = in.data;
  const int64_t xs = in.rowStride;
  const float* freq = static_cast<const float*>(invFreq.data);
  float* y = out.data;
  const int64_t ys = out.rowStride;
  return [=](const StepRuntime& rt) {
    ropeKernel(rt.env, x, rt.step->numTokens, xs, rt.step->positions, numHeads, headDim, rotaryDim, interleaved,
               freq, attentionScaling, y, ys);
  };
}

}  // namespace ops
}  // namespace kiln
