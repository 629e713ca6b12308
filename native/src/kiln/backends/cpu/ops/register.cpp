#include "kiln/backends/cpu/ops/ops.h"

namespace kiln {
namespace ops {

void registerCpuOps(KernelRegistry& r) {
  // Ops with a weight-typed kernel are listed for every weight dtype the kernels accept; the others only
  // run on float32 (their main "weight" is activations or float32 data).
  struct Entry {
    const char* op;
    BoundOp (*bind)(OpBinding&);
    bool anyWeightDType;
  };
  const Entry table[] = {
      {"embedding", bindEmbedding, true},   {"linear", bindLinear, true},
      {"rms_norm", bindRmsNorm, true},      {"add", bindAdd, false},
      {"mul", bindMul, false},              {"silu", bindSilu, false},
      {"swiglu", bindSwiglu, false},        {"rope", bindRope, false},
      {"attention", bindAttention, false},  {"gather_rows", bindGatherRows, false},
      {"layer_norm", bindLayerNorm, true},  {"gelu", bindGelu, false},
      {"geglu", bindGeglu, false},          {"relu", bindRelu, false},
      {"softcap", bindSoftcap, false},      {"position_embedding", bindPositionEmbedding, true},
      {"moe", bindMoe, false},              {"add_rms_norm", bindAddRmsNorm, true},
      {"add_layer_norm", bindAddLayerNorm, true},
      {"all_reduce", bindAllReduce, false}, {"all_gather", bindAllGather, false},
      {"send", bindSend, false},            {"recv", bindRecv, false},
      {"vocab_parallel_embedding", bindVocabParallelEmbedding, true},
  };
  for (const Entry& e : table) {
    for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
      if (dt != DType::F32 && !e.anyWeightDType) continue;
      r.registerOp(e.op, "cpu", dt, e.bind);
    }
  }
  // Weight-only int8 (issue 12): linears only; every other weight stays 16- or 32-bit.
  r.registerOp("linear", "cpu", DType::I8, bindLinear);
  // FP8 e4m3 weights and activations (decision 0015): linears only, the reference of the cuda kernels.
  r.registerOp("linear", "cpu", DType::F8E4M3, bindLinear);
  // int4 weight-only (decision 0014): linears only, through linearInt4Kernel.
  r.registerOp("linear", "cpu", DType::I4, bindLinear);
  // llama.cpp's Q8_0 blocks with Q8_0-quantized inputs (GGUF Q8_0 / Q4_0 weights, decision 0016).
  r.registerOp("linear", "cpu", DType::Q8_0, bindLinear);
}

}  // namespace ops
}  // namespace kiln
