// vocab_parallel_embedding on CUDA: this rank's rows of a token embedding split by vocabulary; tokens of
// other ranks get zeros, and the all_reduce that follows sums the ranks' rows to the full lookup.
#include "kiln/backends/cuda/ops/ops.h"
#include "kiln/runtime/op_specs_parallel.h"

namespace kiln {
namespace cuda {
namespace ops {

BoundOp bindVocabParallelEmbedding(OpBinding& b) {
  const spec::VocabParallelEmbedding s = spec::vocabParallelEmbedding(b);
  CudaBackend* be = &backendOf(b);
  const Matrix out = be->value(s.out);
  return [=](const StepRuntime& rt) {
    vocabSliceEmbedding(be->stream(), deviceStep(rt).tokenIds, rt.step->numTokens, s.vocabStart, s.rows, s.table, s.dtype,
                        s.hidden, s.scale, out);
  };
}

}  // namespace ops
}  // namespace cuda
}  // namespace kiln
