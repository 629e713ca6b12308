// vocab_parallel_embedding: this rank's rows of a token embedding split by vocabulary. A token in the
// rank's range is looked up by the embedding kernel (one row at a time, at its local id); the others
// get zeros, so that the all_reduce that follows sums to the full lookup.
#include <cstring>

#include "kiln/backends/cpu/ops/ops.h"
#include "kiln/runtime/op_specs_parallel.h"

namespace kiln {
namespace ops {

BoundOp bindVocabParallelEmbedding(OpBinding& b) {
  const spec::VocabParallelEmbedding s = spec::vocabParallelEmbedding(b);
  return [s](const StepRuntime& rt) {
    for (int32_t t = 0; t < rt.step->numTokens; ++t) {
      float* row = s.out.data + static_cast<int64_t>(t) * s.out.rowStride;
      const int32_t local = rt.step->tokenIds[t] - static_cast<int32_t>(s.vocabStart);
      if (local >= 0 && local < s.rows) {
        embeddingKernel(rt.env, &local, 1, s.table, s.dtype, s.hidden, s.scale, row, s.out.rowStride);
      } else {
        std::memset(row, 0, sizeof(float) * static_cast<size_t>(s.hidden));
      }
    }
  };
}

}  // namespace ops
}  // namespace kiln
