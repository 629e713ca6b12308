#pragma once
// The CUDA backend's adapters from header ops (read by runtime/op_specs.h) to the kernels of
// backends/cuda/kernels and cuBLASLt, one file each; register.cpp lists them. A bound op only enqueues
// work on the backend's stream: no host synchronisation inside a step.
#include "kiln/backends/cuda/cuda_backend.h"
#include "kiln/backends/cuda/cuda_check.h"
#include "kiln/backends/cuda/kernels/kernels.h"
#include "kiln/backends/cuda/ops/register.h"
#include "kiln/runtime/op_specs.h"

namespace kiln {
namespace cuda {
namespace ops {

inline CudaBackend& backendOf(OpBinding& b) { return *static_cast<CudaBackend*>(b.facts().backend); }
inline const DeviceStep& deviceStep(const StepRuntime& rt) { return *static_cast<const DeviceStep*>(rt.device); }

// Most rows a value of this kind has in a step.
inline int64_t maxRowsOf(OpBinding& b, const ValueRef& v) {
  return v.rows == RowsKind::Tokens ? b.facts().maxNumTokens : b.facts().maxLogitRows;
}
inline size_t align256(size_t n) { return (n + 255) / 256 * 256; }

// Rope's (cos, sin) x attentionScaling for the positions below maxSeqLen, made once on the host and
// shared by every op with the same frequencies (rope.cpp); positions = 0 and cosSin null when too large.
struct RopeTable {
  const float* cosSin = nullptr;
  int64_t positions = 0;
};
RopeTable ropeTable(OpBinding& b, const float* invFreq, int64_t half, float attentionScaling);

BoundOp bindEmbedding(OpBinding& b);
BoundOp bindPositionEmbedding(OpBinding& b);
BoundOp bindLinear(OpBinding& b);
BoundOp bindRmsNorm(OpBinding& b);
BoundOp bindLayerNorm(OpBinding& b);
BoundOp bindAddRmsNorm(OpBinding& b);
BoundOp bindAddLayerNorm(OpBinding& b);
BoundOp bindAdd(OpBinding& b);
BoundOp bindMul(OpBinding& b);
BoundOp bindSilu(OpBinding& b);
BoundOp bindSwiglu(OpBinding& b);
BoundOp bindGelu(OpBinding& b);
BoundOp bindGeglu(OpBinding& b);
BoundOp bindRelu(OpBinding& b);
BoundOp bindSoftcap(OpBinding& b);
BoundOp bindRope(OpBinding& b);
BoundOp bindAttention(OpBinding& b);
BoundOp bindGatherRows(OpBinding& b);
BoundOp bindMoe(OpBinding& b);
// Tensor and pipeline parallelism (collectives.cpp, vocab_parallel_embedding.cpp).
BoundOp bindAllReduce(OpBinding& b);
BoundOp bindAllGather(OpBinding& b);
BoundOp bindSend(OpBinding& b);
BoundOp bindRecv(OpBinding& b);
BoundOp bindVocabParallelEmbedding(OpBinding& b);

}  // namespace ops
}  // namespace cuda
}  // namespace kiln
