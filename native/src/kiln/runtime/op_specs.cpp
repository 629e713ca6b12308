#include "kiln/runtime/op_specs.h"

#include <string>

namespace kiln {
namespace spec {

Embedding embedding(OpBinding& b) {
  // Token ids are checked against the vocabulary before any step runs, so the table must cover it all.
  b.expectArity(0, 1);
  const WeightRef& table = b.weight("table");
  if (table.shape.size() != 2) b.fail("weight \"table\" (\"" + table.name + "\") must be 2-D [vocab, hidden]");
  const int64_t vocab = table.shape[0];
  const int64_t hidden = table.shape[1];
  if (vocab < b.facts().vocabSize) {
    b.fail("weight \"table\" (\"" + table.name + "\") has " + std::to_string(vocab) + " rows but model.vocabSize is " +
           std::to_string(b.facts().vocabSize));
  }
  const ValueRef& out = b.output(0);
  b.expectRows(out, RowsKind::Tokens, "output 0");
  b.expectCols(out, hidden, "output 0");
  return {out, table.data, table.dtype, hidden, static_cast<float>(b.attrNumber("scale", 1.0))};
}

PositionEmbedding positionEmbedding(OpBinding& b) {
  b.expectArity(0, 1);
  const WeightRef& table = b.weight("table");
  if (table.shape.size() != 2) b.fail("weight \"table\" (\"" + table.name + "\") must be 2-D [positions, hidden]");
  const int64_t offset = b.attrInt("offset", 0, int64_t(1) << 31, 0);
  const ValueRef& out = b.output(0);
  b.expectRows(out, RowsKind::Tokens, "output 0");
  b.expectCols(out, table.shape[1], "output 0");
  return {out, table.data, table.dtype, table.name, table.shape[0], table.shape[1], offset};
}

std::string positionPastTable(const PositionEmbedding& s, int64_t position) {
  return "position_embedding: position " + std::to_string(position) +
         (s.offset ? " + offset " + std::to_string(s.offset) : std::string()) + " is beyond the " +
         std::to_string(s.tableRows) + " rows of weight \"" + s.tableName + "\"";
}

Linear linear(OpBinding& b) {
  const std::string prologue = b.attrEnum("prologue", {"none", "rms_norm", "add_rms_norm"}, "none");
  const std::string epilogue = b.attrEnum("epilogue", {"none", "residual", "swiglu", "rope"}, "none");
  const bool normPrologue = prologue != "none", addPrologue = prologue == "add_rms_norm";
  const size_t epilogueOutputs = epilogue == "none" ? 0 : epilogue == "rope" ? 2 : 1;
  b.expectArity(1 + (addPrologue ? 1 : 0) + (epilogue == "residual" ? 1 : 0),
                1 + epilogueOutputs + (normPrologue ? 1 : 0) + (addPrologue ? 1 : 0));
  const WeightRef& w = b.weight("weight");
  if (w.shape.size() != 2) b.fail("weight \"weight\" (\"" + w.name + "\") must be 2-D [N, K]");
  const int64_t N = w.shape[0];
  const int64_t K = w.shape[1];
  if (w.dtype == DType::Q8_0 && K % kQ8_0BlockElements != 0) {
    b.fail("weight \"weight\" (\"" + w.name + "\") is q8_0 with " + std::to_string(K) + " columns, not a multiple of 32");
  }
  const WeightRef* bias = b.optionalWeight("bias");
  if (bias) {
    b.expectDType(*bias, DType::F32, "bias");
    b.expectShape(*bias, {N}, "bias");
  }
  const ValueRef& in = b.input(0);
  const ValueRef& out = b.output(0);
  b.expectCols(in, K, "input 0");
  b.expectRows(out, in.rows, "output 0");
  const bool bf16Inputs = b.attrBool("bf16Inputs", false);
  if (bf16Inputs && w.dtype != DType::BF16) b.fail("attr bf16Inputs needs bfloat16 weights, not " + std::string(dtypeName(w.dtype)));
  // int4: the engine file checked groupSize (a multiple of 32 dividing K) against the weight's bytes.
  if (w.dtype == DType::I4 && (w.groupSize <= 0 || w.groupSize % kInt4Block != 0 || K % w.groupSize != 0)) {
    b.fail("int4 weight \"" + w.name + "\" has group size " + std::to_string(w.groupSize) + ", which does not divide K = " + std::to_string(K));
  }
  Linear s{in, out, w.data, w.dtype, N, K, bias ? static_cast<const float*>(bias->data) : nullptr, bf16Inputs,
           w.dtype == DType::I4 ? w.groupSize : 0};
  size_t next = 1;
  if (epilogue == "none") {
    b.expectCols(out, N, "output 0");
  } else if (epilogue == "residual") {
    s.epilogue = Linear::Epilogue::Residual;
    s.residual = b.input(addPrologue ? 2 : 1);
    b.expectRows(s.residual, in.rows, "the residual input");
    b.expectCols(s.residual, N, "the residual input");
    b.expectCols(out, N, "output 0");
  } else if (epilogue == "swiglu") {
    s.epilogue = Linear::Epilogue::Swiglu;
    if (N % 2 != 0) b.fail("epilogue swiglu needs an even N, got " + std::to_string(N));
    b.expectCols(out, N / 2, "output 0");
  } else {
    s.epilogue = Linear::Epilogue::Rope;
    s.numHeads = b.attrInt("numHeads", 1, 1 << 16);
    s.numKvHeads = b.attrInt("numKvHeads", 1, 1 << 16);
    s.headDim = b.attrInt("headDim", 2, 1 << 16);
    s.rotaryDim = b.attrInt("rotaryDim", 2, s.headDim);
    if (s.rotaryDim % 2 != 0 || s.headDim % 2 != 0) b.fail("epilogue rope needs an even headDim and rotaryDim");
    s.interleaved = b.attrBool("interleaved", false);
    s.attentionScaling = static_cast<float>(b.attrNumber("attentionScaling", 1.0));
    const WeightRef& invFreq = b.weight("invFreq");
    b.expectDType(invFreq, DType::F32, "invFreq");
    b.expectShape(invFreq, {s.rotaryDim / 2}, "invFreq");
    s.invFreq = static_cast<const float*>(invFreq.data);
    const int64_t qCols = s.numHeads * s.headDim, kCols = s.numKvHeads * s.headDim;
    if (in.rows != RowsKind::Tokens) b.fail("epilogue rope needs token rows");
    if (qCols + kCols > N || (N - qCols - kCols) % 2 != 0) {
      b.fail("epilogue rope: q (" + std::to_string(qCols) + ") and k (" + std::to_string(kCols) + ") columns do not fit N = " + std::to_string(N));
    }
    b.expectCols(out, qCols, "output 0");
    s.kvLayer = b.attrInt("kvLayer", -1, 1 << 20, -1);
    if (s.kvLayer >= 0) {
      const ModelFacts& f = b.facts();
      if (s.kvLayer >= f.kvNumLayers) b.fail("attribute \"kvLayer\" = " + std::to_string(s.kvLayer) + " but kvCache.numLayers is " + std::to_string(f.kvNumLayers));
      if (s.numKvHeads != f.kvNumKvHeads || s.headDim != f.kvHeadDim) b.fail("attribute \"kvLayer\": numKvHeads and headDim must match kvCache");
    }
    s.ropedK = b.output(next++);
    b.expectRows(s.ropedK, in.rows, "output 1");
    b.expectCols(s.ropedK, kCols, "output 1");
  }
  if (s.epilogue != Linear::Epilogue::None) {
    s.product = b.output(next++);
    b.expectRows(s.product, in.rows, "the product output");
    b.expectCols(s.product, N, "the product output");
  }
  if (addPrologue) {
    s.addPrologue = true;
    s.addend = b.input(1);
    b.expectRows(s.addend, in.rows, "input 1");
    b.expectCols(s.addend, K, "input 1");
    s.sum = b.output(next++);
    b.expectRows(s.sum, in.rows, "the sum output");
    b.expectCols(s.sum, K, "the sum output");
  }
  if (normPrologue) {
    s.normPrologue = true;
    s.normed = b.output(next++);
    b.expectRows(s.normed, in.rows, "the normed output");
    b.expectCols(s.normed, K, "the normed output");
    const WeightRef& nw = b.weight("normWeight");
    b.expectShape(nw, {K}, "normWeight");
    s.normWeight = nw.data;
    s.normWDType = nw.dtype;
    s.normEps = static_cast<float>(b.attrNumber("normEps"));
    s.normWeightOffset = static_cast<float>(b.attrNumber("normWeightOffset", 0.0));
  }
  return s;
}

RmsNorm rmsNorm(OpBinding& b) {
  b.expectArity(1, 1);
  const WeightRef& w = b.weight("weight");
  if (w.shape.size() != 1) b.fail("weight \"weight\" (\"" + w.name + "\") must be 1-D [hidden]");
  // groupSize: each consecutive group of that many features is normalised on its own, all groups
  // sharing weight [groupSize] (Qwen3's per-head q/k norm). Absent (or 0): the whole row, so the input
  // must be exactly as wide as the weight.
  const int64_t groupAttr = b.attrInt("groupSize", 0, int64_t(1) << 31, 0);
  const int64_t groupSize = groupAttr == 0 ? w.shape[0] : groupAttr;
  if (groupAttr == 0) b.expectCols(b.input(0), groupSize, "input 0");
  if (groupSize != w.shape[0]) {
    b.fail("weight \"weight\" (\"" + w.name + "\") has " + std::to_string(w.shape[0]) +
           " elements but attribute \"groupSize\" is " + std::to_string(groupSize));
  }
  const ValueRef& in = b.input(0);
  const ValueRef& out = b.output(0);
  const int64_t H = in.cols;
  if (H % groupSize != 0) {
    b.fail("input 0 (value " + std::to_string(in.index) + " \"" + in.name + "\") has " + std::to_string(H) +
           " cols, not a multiple of groupSize " + std::to_string(groupSize));
  }
  b.expectRows(out, in.rows, "output 0");
  b.expectCols(out, H, "output 0");
  const double eps = b.attrNumber("eps");
  if (eps < 0) b.fail("attribute \"eps\" must be >= 0");
  const double weightOffset = b.attrNumber("weightOffset", 0.0);
  return {in, out, w.data, w.dtype, H / groupSize, groupSize, static_cast<float>(eps), static_cast<float>(weightOffset)};
}

LayerNorm layerNorm(OpBinding& b) {
  b.expectArity(1, 1);
  const WeightRef& w = b.weight("weight");
  if (w.shape.size() != 1) b.fail("weight \"weight\" (\"" + w.name + "\") must be 1-D [hidden]");
  const int64_t H = w.shape[0];
  const WeightRef* bias = b.optionalWeight("bias");
  if (bias) {
    b.expectDType(*bias, DType::F32, "bias");
    b.expectShape(*bias, {H}, "bias");
  }
  const ValueRef& in = b.input(0);
  const ValueRef& out = b.output(0);
  b.expectCols(in, H, "input 0");
  b.expectRows(out, in.rows, "output 0");
  b.expectCols(out, H, "output 0");
  const double eps = b.attrNumber("eps");
  if (eps < 0) b.fail("attribute \"eps\" must be >= 0");
  return {in, out, w.data, w.dtype, bias ? static_cast<const float*>(bias->data) : nullptr, H, static_cast<float>(eps)};
}

namespace {

// The checks shared by the fused residual + norm ops: a, b and sum [R, H] of one rows kind, y like sum,
// weight [H]. Returns H.
int64_t checkAddNorm(OpBinding& b, const WeightRef& w) {
  b.expectArity(2, 2);
  if (w.shape.size() != 1) b.fail("weight \"weight\" (\"" + w.name + "\") must be 1-D [hidden]");
  const int64_t H = w.shape[0];
  const ValueRef& a = b.input(0);
  b.expectCols(a, H, "input 0");
  b.expectRows(b.input(1), a.rows, "input 1");
  b.expectCols(b.input(1), H, "input 1");
  for (size_t i = 0; i < 2; ++i) {
    const std::string role = "output " + std::to_string(i);
    b.expectRows(b.output(i), a.rows, role);
    b.expectCols(b.output(i), H, role);
  }
  return H;
}

}  // namespace

AddRmsNorm addRmsNorm(OpBinding& b) {
  const WeightRef& w = b.weight("weight");
  const int64_t H = checkAddNorm(b, w);
  const double eps = b.attrNumber("eps");
  if (eps < 0) b.fail("attribute \"eps\" must be >= 0");
  const double weightOffset = b.attrNumber("weightOffset", 0.0);
  RmsNorm norm{b.output(0), b.output(1), w.data, w.dtype, 1, H, static_cast<float>(eps), static_cast<float>(weightOffset)};
  return {b.input(0), b.input(1), norm};
}

AddLayerNorm addLayerNorm(OpBinding& b) {
  const WeightRef& w = b.weight("weight");
  const int64_t H = checkAddNorm(b, w);
  const WeightRef* bias = b.optionalWeight("bias");
  if (bias) {
    b.expectDType(*bias, DType::F32, "bias");
    b.expectShape(*bias, {H}, "bias");
  }
  const double eps = b.attrNumber("eps");
  if (eps < 0) b.fail("attribute \"eps\" must be >= 0");
  LayerNorm norm{b.output(0), b.output(1), w.data, w.dtype, bias ? static_cast<const float*>(bias->data) : nullptr, H,
                 static_cast<float>(eps)};
  return {b.input(0), b.input(1), norm};
}

Binary binary(OpBinding& b) {
  b.expectArity(2, 1);
  const ValueRef& a = b.input(0);
  const ValueRef& c = b.input(1);
  const ValueRef& out = b.output(0);
  b.expectRows(c, a.rows, "input 1");
  b.expectCols(c, a.cols, "input 1");
  b.expectRows(out, a.rows, "output 0");
  b.expectCols(out, a.cols, "output 0");
  return {a, c, out};
}

Unary unary(OpBinding& b) {
  b.expectArity(1, 1);
  b.expectRows(b.output(0), b.input(0).rows, "output 0");
  b.expectCols(b.output(0), b.input(0).cols, "output 0");
  return {b.input(0), b.output(0)};
}

bool geluIsTanh(OpBinding& b) { return b.attrEnum("approximate", {"none", "tanh"}, "none") == "tanh"; }

float softcapCap(OpBinding& b) {
  const double cap = b.attrNumber("cap");
  if (!(cap > 0)) b.fail("attribute \"cap\" must be > 0");
  return static_cast<float>(cap);
}

Rope rope(OpBinding& b) {
  b.expectArity(1, 1);
  const int64_t numHeads = b.attrInt("numHeads", 1, 1 << 16);
  const int64_t headDim = b.attrInt("headDim", 1, 1 << 16);
  const int64_t rotaryDim = b.attrInt("rotaryDim", 2, headDim);
  if (rotaryDim % 2 != 0) b.fail("attribute \"rotaryDim\" must be even, got " + std::to_string(rotaryDim));
  const bool interleaved = b.attrBool("interleaved", false);
  const float attentionScaling = static_cast<float>(b.attrNumber("attentionScaling", 1.0));
  const WeightRef& invFreq = b.weight("invFreq");
  b.expectDType(invFreq, DType::F32, "invFreq");
  b.expectShape(invFreq, {rotaryDim / 2}, "invFreq");
  const ValueRef& in = b.input(0);
  const ValueRef& out = b.output(0);
  b.expectRows(in, RowsKind::Tokens, "input 0");
  b.expectCols(in, numHeads * headDim, "input 0");
  b.expectRows(out, RowsKind::Tokens, "output 0");
  b.expectCols(out, numHeads * headDim, "output 0");
  const double thetaBase = b.attrNumber("llamaCppThetaBase", 0.0);
  if (!(thetaBase == 0.0 || (thetaBase > 1.0 && thetaBase < 1e30))) b.fail("attribute \"llamaCppThetaBase\" must be > 1 (or 0: off)");
  return {in, out, static_cast<const float*>(invFreq.data), numHeads, headDim, rotaryDim, interleaved, attentionScaling,
          static_cast<float>(thetaBase)};
}

Attention attention(OpBinding& b) {
  // The KV cache's geometry comes from the header's kvCache, so every attention op must agree with it.
  b.expectArity(3, 1);
  const ModelFacts& f = b.facts();
  const int64_t layer = b.attrInt("layer", 0, 1 << 20);
  if (layer >= f.kvNumLayers) {
    b.fail("attribute \"layer\" = " + std::to_string(layer) + " but kvCache.numLayers is " + std::to_string(f.kvNumLayers));
  }
  const int64_t numHeads = b.attrInt("numHeads", 1, 1 << 16);
  const int64_t numKvHeads = b.attrInt("numKvHeads", 1, 1 << 16);
  const int64_t headDim = b.attrInt("headDim", 1, 1 << 16);
  if (numKvHeads != f.kvNumKvHeads) {
    b.fail("attribute \"numKvHeads\" = " + std::to_string(numKvHeads) + " but kvCache.numKvHeads is " +
           std::to_string(f.kvNumKvHeads));
  }
  if (headDim != f.kvHeadDim) {
    b.fail("attribute \"headDim\" = " + std::to_string(headDim) + " but kvCache.headDim is " + std::to_string(f.kvHeadDim));
  }
  if (numHeads % numKvHeads != 0) {
    b.fail("attribute \"numHeads\" = " + std::to_string(numHeads) + " is not a multiple of numKvHeads = " +
           std::to_string(numKvHeads));
  }
  const float scale = static_cast<float>(b.attrNumber("scale"));
  const int64_t slidingWindow = b.attrInt("slidingWindow", 0, int64_t(1) << 40, 0);
  // Gemma 2's score cap and BLOOM's ALiBi slopes (a float32 [numHeads] weight).
  const double softcap = b.attrNumber("softcap", 0.0);
  if (softcap < 0) b.fail("attribute \"softcap\" must be >= 0 (0 = off)");
  const WeightRef* alibi = b.optionalWeight("alibiSlopes");
  if (alibi) {
    b.expectDType(*alibi, DType::F32, "alibiSlopes");
    b.expectShape(*alibi, {numHeads}, "alibiSlopes");
  }
  const ValueRef& q = b.input(0);
  const ValueRef& k = b.input(1);
  const ValueRef& v = b.input(2);
  const ValueRef& out = b.output(0);
  b.expectRows(q, RowsKind::Tokens, "input 0 (q)");
  b.expectCols(q, numHeads * headDim, "input 0 (q)");
  b.expectRows(k, RowsKind::Tokens, "input 1 (k)");
  b.expectCols(k, numKvHeads * headDim, "input 1 (k)");
  b.expectRows(v, RowsKind::Tokens, "input 2 (v)");
  b.expectCols(v, numKvHeads * headDim, "input 2 (v)");
  b.expectRows(out, RowsKind::Tokens, "output 0");
  b.expectCols(out, numHeads * headDim, "output 0");
  return {q, k, v, out, static_cast<int32_t>(layer), numHeads, numKvHeads, headDim, slidingWindow, scale,
          static_cast<float>(softcap), alibi ? static_cast<const float*>(alibi->data) : nullptr, b.attrBool("llamaCppF16", false),
          b.attrBool("kvStored", false)};
}

GatherRows gatherRows(OpBinding& b) {
  // Picks the step's logit rows out of the token rows, so that the LM head only runs over them.
  b.expectArity(1, 1);
  const ValueRef& in = b.input(0);
  const ValueRef& out = b.output(0);
  b.expectRows(in, RowsKind::Tokens, "input 0");
  b.expectRows(out, RowsKind::LogitRows, "output 0");
  b.expectCols(out, in.cols, "output 0");
  return {in, out};
}

Moe moe(OpBinding& b) {
  b.expectArity(1, 1);
  const int64_t E = b.attrInt("numExperts", 1, 1 << 16);
  const int64_t topK = b.attrInt("topK", 1, E);
  const bool normalizeTopK = b.attrBool("normalizeTopK", false);
  const WeightRef& router = b.weight("router");
  if (router.shape.size() != 2 || router.shape[0] != E) {
    b.fail("weight \"router\" (\"" + router.name + "\") must be [numExperts = " + std::to_string(E) + ", hidden]");
  }
  const int64_t H = router.shape[1];
  const WeightRef& gate = b.weight("gate");
  if (gate.shape.size() != 2 || gate.shape[0] % E != 0 || gate.shape[0] == 0) {
    b.fail("weight \"gate\" (\"" + gate.name + "\") must be [numExperts * intermediate, hidden]");
  }
  const int64_t I = gate.shape[0] / E;
  b.expectShape(gate, {E * I, H}, "gate");
  const WeightRef& up = b.weight("up");
  b.expectShape(up, {E * I, H}, "up");
  const WeightRef& down = b.weight("down");
  b.expectShape(down, {E * H, I}, "down");
  if (gate.dtype == DType::I32 || router.dtype == DType::I32) b.fail("int32 weights are not accepted");
  b.expectDType(up, gate.dtype, "up");
  b.expectDType(down, gate.dtype, "down");
  const ValueRef& in = b.input(0);
  const ValueRef& out = b.output(0);
  b.expectCols(in, H, "input 0");
  b.expectRows(out, in.rows, "output 0");
  b.expectCols(out, H, "output 0");
  return {in, out, router.data, gate.data, up.data, down.data, router.dtype, gate.dtype, E, topK, H, I, normalizeTopK};
}

}  // namespace spec
}  // namespace kiln
