// attention: stores the step's K/V into layer `layer` of the paged KV cache, then attends causally. The
// cache's geometry comes from the header's kvCache, so every attention op must agree with it.
#include "kiln/runtime/ops/ops.h"

namespace kiln {
namespace ops {

BoundOp bindAttention(OpBinding& b) {
  b.expectArity(3, 1);
  const ModelFacts& f = b.facts();
  const int64_t layer = b.attrInt("layer", 0, 1 << 20);
  if (layer >= f.kvNumLayers) {
    b.fail("attribute \"layer\" = " + std::to_string(layer) + " but kvCache.numLayers is " +
           std::to_string(f.kvNumLayers));
  }
  const int64_t numHeads = b.attrInt("numHeads", 1, 1 << 16);
  const int64_t numKvHeads = b.attrInt("numKvHeads", 1, 1 << 16);
  const int64_t headDim = b.attrInt("headDim", 1, 1 << 16);
  if (numKvHeads != f.kvNumKvHeads) {
    b.fail("attribute \"numKvHeads\" = " + std::to_string(numKvHeads) + " but kvCache.numKvHeads is " +
           std::to_string(f.kvNumKvHeads));
  }
  if (headDim != f.kvHeadDim) {
    b.fail("attribute \"headDim\" = " + std::to_string(headDim) + " but kvCache.headDim is " +
           std::to_string(f.kvHeadDim));
  }
  if (numHeads % numKvHeads != 0) {
    b.fail("attribute \"numHeads\" = " + std::to_string(numHeads) + " is not a multiple of numKvHeads = " +
           std::to_string(numKvHeads));
  }
  const float scale = static_cast<float>(b.attrNumber("scale"));
  const int64_t slidingWindow = b.attrInt("slidingWindow", 0, int64_t(1) << 40, 0);

  // Gemma 2's score cap and BLOOM's ALiBi slopes (a float32 [numHeads] weight).
  const double softcap = b.attrNumber("softcap", 0.0);
  if (softcap < 0) b.fail("attribute \"softcap\" must be >= 0 (0 = off)");
  const WeightRef* alibi = b.optionalWeight("alibiSlopes");
  if (alibi) {
    b.expectDType(*alibi, DType::F32, "alibiSlopes");
    b.expectShape(*alibi, {numHeads}, "alibiSlopes");
  }
  AttentionExtras extras;
  extras.softcap = static_cast<float>(softcap);
  extras.alibiSlopes = alibi ? static_cast<const float*>(alibi->data) : nullptr;

  const ValueRef& q = b.input(0);
  const ValueRef& k = b.input(1);
  const ValueRef& v = b.input(2);
  const ValueRef& out = b.output(0);
  b.expectRows(q, RowsKind::Tokens, "input 0 (q)");
  b.expectCols(q, numHeads * headDim, "input 0 (q)");
  b.expectRows(k, RowsKind::Tokens, "input 1 (k)");
  b.expectCols(k, numKvHeads * headDim, "input 1 (k)");
  b.expectRows(v, RowsKind::Tokens, "input 2 (v)");
  b.expectCols(v, numKvHeads * headDim, "input 2 (v)");
  b.expectRows(out, RowsKind::Tokens, "output 0");
  b.expectCols(out, numHeads * headDim, "output 0");

  const int32_t layerIndex = static_cast<int32_t>(layer);
  const float* qd = q.data;
  const int64_t qs = q.rowStride;
  const float* kd = k.data;
  const int64_t ks = k.rowStride;
  const float* vd = v.data;
  const int64_t vs = v.rowStride;
  float* y = out.data;
  const int64_t ys = out.rowStride;
  return [=](const StepRuntime& rt) {
    attentionKernel(rt.env, *rt.step, layerIndex, qd, qs, kd, ks, vd, vs, numHeads, numKvHeads, headDim, scale,
                    slidingWindow, extras, y, ys);
  };
}

}  // namespace ops
}  // namespace kiln
