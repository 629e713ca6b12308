// gelu, relu, softcap (one input) and geglu (gelu(gate) * up): elementwise over one shape.
#include "kiln/runtime/ops/ops.h"

namespace kiln {
namespace ops {

namespace {

// Checks a one-input elementwise op; hands back the input and output to bind.
void expectUnary(OpBinding& b) {
  b.expectArity(1, 1);
  b.expectRows(b.output(0), b.input(0).rows, "output 0");
  b.expectCols(b.output(0), b.input(0).cols, "output 0");
}

bool approximateIsTanh(OpBinding& b) { return b.attrEnum("approximate", {"none", "tanh"}, "none") == "tanh"; }

}  // namespace

BoundOp bindGelu(OpBinding& b) {
  expectUnary(b);
  const bool tanh = approximateIsTanh(b);
  const ValueRef a = b.input(0);
  const ValueRef out = b.output(0);
  return [=](const StepRuntime& rt) {
    geluKernel(rt.env, a.data, a.rowStride, a.numRows(*rt.step), a.cols, tanh, out.data, out.rowStride);
  };
}

BoundOp bindRelu(OpBinding& b) {
  expectUnary(b);
  const ValueRef a = b.input(0);
  const ValueRef out = b.output(0);
  return [=](const StepRuntime& rt) {
    reluKernel(rt.env, a.data, a.rowStride, a.numRows(*rt.step), a.cols, out.data, out.rowStride);
  };
}

BoundOp bindSoftcap(OpBinding& b) {
  expectUnary(b);
  const double cap = b.attrNumber("cap");
  if (!(cap > 0)) b.fail("attribute \"cap\" must be > 0");
  const float capF = static_cast<float>(cap);
  const ValueRef a = b.input(0);
  const ValueRef out = b.output(0);
  return [=](const StepRuntime& rt) {
    softcapKernel(rt.env, a.data, a.rowStride, a.numRows(*rt.step), a.cols, capF, out.data, out.rowStride);
  };
}

BoundOp bindGeglu(OpBinding& b) {
  b.expectArity(2, 1);
  const ValueRef gate = b.input(0);
  const ValueRef up = b.input(1);
  const ValueRef out = b.output(0);
  b.expectRows(up, gate.rows, "input 1");
  b.expectCols(up, gate.cols, "input 1");
  b.expectRows(out, gate.rows, "output 0");
  b.expectCols(out, gate.cols, "output 0");
  const bool tanh = approximateIsTanh(b);
  return [=](const StepRuntime& rt) {
    gegluKernel(rt.env, gate.data, gate.rowStride, up.data, up.rowStride, gate.numRows(*rt.step), gate.cols, tanh,
                out.data, out.rowStride);
  };
}

}  // namespace ops
}  // namespace kiln
