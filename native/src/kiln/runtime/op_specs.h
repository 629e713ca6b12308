#pragma once
// Each op of the engine format (docs/engine-format.md), read and checked once for every backend: its
// operands, shapes and attributes. A backend's adapter (backends/<backend>/ops/) turns a spec into a
// bound call of its kernels, so the two backends cannot disagree on what an op means or accepts.
#include <cstdint>
#include <string>

#include "kiln/runtime/kernel_registry.h"

namespace kiln {
namespace spec {

struct Embedding {
  ValueRef out;
  const void* table;
  DType dtype;
  int64_t hidden;
  float scale;
};
Embedding embedding(OpBinding& b);

struct PositionEmbedding {
  ValueRef out;
  const void* table;
  DType dtype;
  std::string tableName;
  int64_t tableRows, hidden, offset;
};
PositionEmbedding positionEmbedding(OpBinding& b);
// The step's error when a position (plus offset) falls outside the table.
std::string positionPastTable(const PositionEmbedding& s, int64_t position);

struct Linear {
  ValueRef x, y;
  const void* weight;
  DType dtype;
  int64_t N, K;
  const float* bias;  // [N] float32, or null
  // Attr bf16Inputs (bfloat16 weights only; default false): x is read rounded to bfloat16, as a cuda engine
  // stores it, so the CPU's AVX512_BF16 set can multiply bfloat16 pairs (decision 0012).
  bool bf16Inputs;
  // int4 weights (dtype.h): input features per scale; 0 for other weight types.
  int64_t groupSize;

  // Fused neighbours (cuda engines; the builder's lower/fuse-linear-neighbours.ts). Attr prologue
  // "rms_norm": x is the norm's input and `normed` (the last output) the GEMM operand, normed =
  // RMSNorm(x) with normWeight; "add_rms_norm": input 1 is `addend`, sum = x + addend (the output before
  // normed) and normed = RMSNorm(sum). Attr epilogue:
  //   "residual": input 1 is `residual`; y = residual + x W^T (+ bias); `product` holds x W^T (+ bias);
  //   "swiglu":   y = silu(p[:, :N/2]) * p[:, N/2:] with p = x W^T (+ bias), written to `product`;
  //   "rope":     `product` = x W^T (+ bias) = [q | k | v]; y = rope(q), `ropedK` = rope(k) (the rope
  //               op's numHeads / numKvHeads, headDim, rotaryDim, interleaved, attentionScaling, invFreq).
  // Inputs in order: x, addend (add_rms_norm), residual. Outputs in order: y, ropedK (rope), product
  // (any epilogue), sum (add_rms_norm), normed (prologue).
  enum class Epilogue { None, Residual, Swiglu, Rope };
  bool normPrologue = false, addPrologue = false;
  ValueRef normed, addend, sum;
  const void* normWeight = nullptr;
  DType normWDType = DType::F32;
  float normEps = 0.0f, normWeightOffset = 0.0f;
  Epilogue epilogue = Epilogue::None;
  ValueRef residual, product, ropedK;
  int64_t numHeads = 0, numKvHeads = 0, headDim = 0, rotaryDim = 0;
  bool interleaved = false;
  float attentionScaling = 1.0f;
  const float* invFreq = nullptr;
  // Rope epilogue with attr kvLayer: k' and v are also stored into that layer of the KV cache at the
  // step's positions (the attention op after it has attr kvStored).
  int64_t kvLayer = -1;
  bool fused() const { return normPrologue || epilogue != Epilogue::None; }
  // The GEMM's input and output values (what the op reads and writes without its neighbours).
  const ValueRef& gemmIn() const { return normPrologue ? normed : x; }
  const ValueRef& gemmOut() const { return epilogue == Epilogue::None ? y : product; }
};
Linear linear(OpBinding& b);

struct RmsNorm {
  ValueRef x, y;
  const void* weight;
  DType dtype;
  int64_t numGroups, groupSize;
  float eps, weightOffset;
};
RmsNorm rmsNorm(OpBinding& b);

struct LayerNorm {
  ValueRef x, y;
  const void* weight;
  DType dtype;
  const float* bias;  // [H] float32, or null
  int64_t H;
  float eps;
};
LayerNorm layerNorm(OpBinding& b);

// add_rms_norm / add_layer_norm: sum = a + b, then y = the norm of sum (whole rows): the residual add and
// the norm that reads it, fused by the builder. `norm` holds the norm's fields; its x is `sum`.
struct AddRmsNorm {
  ValueRef a, b;
  RmsNorm norm;
};
AddRmsNorm addRmsNorm(OpBinding& b);
struct AddLayerNorm {
  ValueRef a, b;
  LayerNorm norm;
};
AddLayerNorm addLayerNorm(OpBinding& b);

// add, mul, swiglu (silu(a) * b), geglu (gelu(a) * b): two inputs of one shape.
struct Binary {
  ValueRef a, b, out;
};
Binary binary(OpBinding& b);
// silu, relu, gelu, softcap: one input.
struct Unary {
  ValueRef a, out;
};
Unary unary(OpBinding& b);
// gelu's and geglu's `approximate`: true for "tanh".
bool geluIsTanh(OpBinding& b);
float softcapCap(OpBinding& b);

struct Rope {
  ValueRef x, y;
  const float* invFreq;  // [rotaryDim / 2]
  int64_t numHeads, headDim, rotaryDim;
  bool interleaved;
  float attentionScaling;
  // attr llamaCppThetaBase (cpu; 0 = absent): angles as llama.cpp computes them, pos * s^i by repeated
  // float32 products with s = powf(base, -2 / rotaryDim), instead of pos * invFreq[i] (decision 0016).
  float llamaCppThetaBase;
};
Rope rope(OpBinding& b);

struct Attention {
  ValueRef q, k, v, out;
  int32_t layer;
  int64_t numHeads, numKvHeads, headDim, slidingWindow;
  float scale, softcap;
  const float* alibiSlopes;  // [numHeads], or null
  bool llamaCppF16;          // attr llamaCppF16 (cpu): llama.cpp's float16 KV cache numerics, decision 0016
  // attr kvStored (cuda engines): the linear that makes q, k and v (epilogue rope, attr kvLayer) already
  // wrote the step's K and V rows into the cache.
  bool kvStored = false;
};
Attention attention(OpBinding& b);

struct GatherRows {
  ValueRef x, y;
};
GatherRows gatherRows(OpBinding& b);

struct Moe {
  ValueRef x, y;
  const void *router, *gate, *up, *down;
  DType routerDType, expertDType;
  int64_t numExperts, topK, hidden, intermediate;
  bool normalizeTopK;
};
Moe moe(OpBinding& b);

}  // namespace spec
}  // namespace kiln
