// embedding: out[t, :] = table[tokenIds[t], :] * scale. Token ids are checked against the vocabulary by
// Engine::generate before any step runs, so the table must cover the whole vocabulary.
#include "kiln/runtime/ops/ops.h"

namespace kiln {
namespace ops {

BoundOp bindEmbedding(OpBinding& b) {
  b.expectArity(0, 1);
  const WeightRef& table = b.weight("table");
  if (table.shape.size() != 2) b.fail("weight \"table\" (\"" + table.name + "\") must be 2-D [vocab, hidden]");
  const int64_t vocab = table.shape[0];
  const int64_t hidden = table.shape[1];
  if (vocab < b.facts().vocabSize) {
    b.fail("weight \"table\" (\"" + table.name + "\") has " + std::to_string(vocab) +
           " rows but model.vocabSize is " + std::to_string(b.facts().vocabSize));
  }
  const ValueRef& out = b.output(0);
  b.expectRows(out, RowsKind::Tokens, "output 0");
  b.expectCols(out, hidden, "output 0");
  const float scale = static_cast<float>(b.attrNumber("scale", 1.0));

  const void* data = table.data;
  const DType dt = table.dtype;
  float* y = out.data;
  const int64_t yStride = out.rowStride;
  return [=](const StepRuntime& rt) {
    embeddingKernel(rt.env, rt.step->tokenIds, rt.step->numTokens, data, dt, hidden, scale, y, yStride);
  };
}

}  // namespace ops
}  // namespace kiln
