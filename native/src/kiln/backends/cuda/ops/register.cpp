#include <string>

#include "kiln/backends/cuda/ops/ops.h"

namespace kiln {
namespace cuda {

void registerCudaOps(KernelRegistry& r) {
  // Registered for every dtype the lookup may use (a weighted op's weight dtype, float32 for the
  // others): each adapter checks that weights match the engine's activation dtype.
  const std::pair<const char*, BoundOp (*)(OpBinding&)> table[] = {
      {"embedding", ops::bindEmbedding}, {"position_embedding", ops::bindPositionEmbedding},
      {"linear", ops::bindLinear},       {"rms_norm", ops::bindRmsNorm},
      {"layer_norm", ops::bindLayerNorm}, {"add", ops::bindAdd},
      {"mul", ops::bindMul},             {"silu", ops::bindSilu},
      {"swiglu", ops::bindSwiglu},       {"gelu", ops::bindGelu},
      {"geglu", ops::bindGeglu},         {"relu", ops::bindRelu},
      {"softcap", ops::bindSoftcap},     {"rope", ops::bindRope},
      {"attention", ops::bindAttention}, {"gather_rows", ops::bindGatherRows},
      {"moe", ops::bindMoe},             {"add_rms_norm", ops::bindAddRmsNorm},
      {"add_layer_norm", ops::bindAddLayerNorm},
      {"all_reduce", ops::bindAllReduce}, {"all_gather", ops::bindAllGather},
      {"send", ops::bindSend},           {"recv", ops::bindRecv},
      {"vocab_parallel_embedding", ops::bindVocabParallelEmbedding},
  };
  for (const auto& e : table) {
    const OpFactory factory = e.second;
    for (DType dt : {DType::F32, DType::F16, DType::BF16}) r.registerOp(e.first, "cuda", dt, factory);
    // Weight-only int8: linears only (kernels/gemv_int8.cu); every other weight stays 16- or 32-bit.
    if (std::string(e.first) == "linear") r.registerOp(e.first, "cuda", DType::I8, factory);
    // FP8 e4m3 weights and activations (decision 0015): linears only (kernels/fp8.cu).
    if (std::string(e.first) == "linear") r.registerOp(e.first, "cuda", DType::F8E4M3, factory);
    // int4 weight-only (decision 0014): linears only (kernels/gemv_int4.cu).
    if (std::string(e.first) == "linear") r.registerOp(e.first, "cuda", DType::I4, factory);
  }
}

}  // namespace cuda
}  // namespace kiln
