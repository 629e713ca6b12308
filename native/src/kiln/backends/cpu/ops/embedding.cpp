// embedding: out[t, :] = table[tokenIds[t], :] * scale.
#include "kiln/backends/cpu/ops/ops.h"

namespace kiln {
namespace ops {

BoundOp bindEmbedding(OpBinding& b) {
  const spec::Embedding s = spec::embedding(b);
  return [s](const StepRuntime& rt) {
    embeddingKernel(rt.env, rt.step->tokenIds, rt.step->numTokens, s.table, s.dtype, s.hidden, s.scale, s.out.data,
                    s.out.rowStride);
  };
}

}  // namespace ops
}  // namespace kiln
