#pragma once
// The adapters from header ops to kernels, one file each; kernel_registry.cpp registers them.
#include "kiln/runtime/kernel_registry.h"

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
BoundOp bindGelu(OpBinding& b);
BoundOp bindGeglu(OpBinding& b);
BoundOp bindRelu(OpBinding& b);
BoundOp bindSoftcap(OpBinding& b);
BoundOp bindPositionEmbedding(OpBinding& b);
// moe has no "weight"/"table" slot, so it is looked up as float32 and checks its weights' types itself.
BoundOp bindMoe(OpBinding& b);

}  // namespace ops
}  // namespace kiln
