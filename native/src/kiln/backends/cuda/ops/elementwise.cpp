// add, mul, silu, swiglu, gelu, geglu, relu, softcap: one elementwise kernel, the function a template
// argument.
#include "kiln/backends/cuda/ops/ops.h"

namespace kiln {
namespace cuda {
namespace ops {

namespace {

BoundOp bindBinary(OpBinding& b, Elementwise op) {
  const spec::Binary s = spec::binary(b);
  CudaBackend* be = &backendOf(b);
  const Matrix a = be->value(s.a);
  const Matrix c = be->value(s.b);
  const Matrix out = be->value(s.out);
  return [=](const StepRuntime& rt) { elementwise(be->stream(), op, a, c, s.a.numRows(*rt.step), s.a.cols, 0.0f, out); };
}

BoundOp bindUnary(OpBinding& b, Elementwise op, float param = 0.0f) {
  const spec::Unary s = spec::unary(b);
  CudaBackend* be = &backendOf(b);
  const Matrix a = be->value(s.a);
  const Matrix out = be->value(s.out);
  return [=](const StepRuntime& rt) { elementwise(be->stream(), op, a, a, s.a.numRows(*rt.step), s.a.cols, param, out); };
}

}  // namespace

BoundOp bindAdd(OpBinding& b) { return bindBinary(b, Elementwise::Add); }
BoundOp bindMul(OpBinding& b) { return bindBinary(b, Elementwise::Mul); }
BoundOp bindSwiglu(OpBinding& b) { return bindBinary(b, Elementwise::Swiglu); }
BoundOp bindGeglu(OpBinding& b) {
  const bool tanh = spec::geluIsTanh(b);
  return bindBinary(b, tanh ? Elementwise::GegluTanh : Elementwise::Geglu);
}
BoundOp bindSilu(OpBinding& b) { return bindUnary(b, Elementwise::Silu); }
BoundOp bindRelu(OpBinding& b) { return bindUnary(b, Elementwise::Relu); }
BoundOp bindGelu(OpBinding& b) {
  const bool tanh = spec::geluIsTanh(b);
  return bindUnary(b, tanh ? Elementwise::GeluTanh : Elementwise::Gelu);
}
BoundOp bindSoftcap(OpBinding& b) {
  const float cap = spec::softcapCap(b);
  return bindUnary(b, Elementwise::Softcap, cap);
}

}  // namespace ops
}  // namespace cuda
}  // namespace kiln
