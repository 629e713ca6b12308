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

// Main weights are stored in the activation dtype on CUDA (`kiln build --target cuda --dtype`).
inline void expectActivationDType(OpBinding& b, DType weightDType, const std::string& slot) {
  if (weightDType != b.facts().activationDType) {
    b.fail("weight \"" + slot + "\" is " + dtypeName(weightDType) + " but the engine's activations are " +
           dtypeName(b.facts().activationDType) + " (a cuda engine stores them in one dtype: rebuild it)");
  }
}

BoundOp bindEmbedding(OpBinding& b);
BoundOp bindPositionEmbedding(OpBinding& b);
BoundOp bindLinear(OpBinding& b);
BoundOp bindRmsNorm(OpBinding& b);
BoundOp bindLayerNorm(OpBinding& b);
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

}  // namespace ops
}  // namespace cuda
}  // namespace kiln
