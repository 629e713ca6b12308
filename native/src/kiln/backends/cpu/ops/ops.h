#pragma once
// The CPU backend's adapters from header ops (read by runtime/op_specs.h) to the kernels of
// backends/cpu/kernels, one file each; register.cpp lists them.
#include "kiln/backends/cpu/kernels/kernels.h"
#include "kiln/runtime/kernel_registry.h"
#include "kiln/runtime/op_specs.h"

namespace kiln {
namespace ops {

BoundOp bindEmbedding(OpBinding& b);
BoundOp bindLinear(OpBinding& b);
BoundOp bindRmsNorm(OpBinding& b);
BoundOp bindAdd(OpBinding& b);
BoundOp bindMul(OpBinding& b);
BoundOp bindSilu(OpBinding& b);
BoundOp bindSwiglu(OpBinding& b);
BoundOp bindRope(OpBinding& b);
BoundOp bindAttention(OpBinding& b);
BoundOp bindGatherRows(OpBinding& b);
BoundOp bindLayerNorm(OpBinding& b);
BoundOp bindAddRmsNorm(OpBinding& b);
BoundOp bindAddLayerNorm(OpBinding& b);
BoundOp bindGelu(OpBinding& b);
BoundOp bindGeglu(OpBinding& b);
BoundOp bindRelu(OpBinding& b);
BoundOp bindSoftcap(OpBinding& b);
BoundOp bindPositionEmbedding(OpBinding& b);
// moe has no "weight"/"table" slot, so it is looked up as float32 and checks its weights' types itself.
BoundOp bindMoe(OpBinding& b);
// Tensor and pipeline parallelism (collectives.cpp): run through ModelFacts::parallel's communicators.
BoundOp bindAllReduce(OpBinding& b);
BoundOp bindAllGather(OpBinding& b);
BoundOp bindSend(OpBinding& b);
BoundOp bindRecv(OpBinding& b);
BoundOp bindVocabParallelEmbedding(OpBinding& b);  // vocab_parallel_embedding.cpp

// Registers every adapter above under backend "cpu".
void registerCpuOps(KernelRegistry& registry);

}  // namespace ops
}  // namespace kiln
