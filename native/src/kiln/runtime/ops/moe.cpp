// moe: Mixtral's sparse mixture of SwiGLU experts over x [R, H], with the router and the experts' weights
// stacked along dim 0 (see moeKernel).
#include "kiln/runtime/ops/ops.h"

namespace kiln {
namespace ops {

BoundOp bindMoe(OpBinding& b) {
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

  const ValueRef x = in;
  const void* routerData = router.data;
  const DType routerDt = router.dtype;
  const void* gateData = gate.data;
  const void* upData = up.data;
  const void* downData = down.data;
  const DType expertDt = gate.dtype;
  float* y = out.data;
  const int64_t yStride = out.rowStride;
  return [=](const StepRuntime& rt) {
    moeKernel(rt.env, x.data, x.numRows(*rt.step), x.rowStride, routerData, routerDt, gateData, upData, downData,
              expertDt, E, H, I, topK, normalizeTopK, y, yStride);
  };
}

}  // namespace ops
}  // namespace kiln
