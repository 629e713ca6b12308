// gelu, relu, softcap (one input) and geglu (gelu(gate) * up): elementwise over one shape.
#include "kiln/backends/cpu/ops/ops.h"

namespace kiln {
namespace ops {

BoundOp bindGelu(OpBinding& b) {
  const spec::Unary s = spec::unary(b);
  const bool tanh = spec::geluIsTanh(b);
  return [s, tanh](const StepRuntime& rt) {
    geluKernel(rt.env, s.a.data, s.a.rowStride, s.a.numRows(*rt.step), s.a.cols, tanh, s.out.data, s.out.rowStride);
  };
}

BoundOp bindRelu(OpBinding& b) {
  const spec::Unary s = spec::unary(b);
  return [s](const StepRuntime& rt) {
    reluKernel(rt.env, s.a.data, s.a.rowStride, s.a.numRows(*rt.step), s.a.cols, s.out.data, s.out.rowStride);
  };
}

BoundOp bindSoftcap(OpBinding& b) {
  const spec::Unary s = spec::unary(b);
  const float cap = spec::softcapCap(b);
  return [s, cap](const StepRuntime& rt) {
    softcapKernel(rt.env, s.a.data, s.a.rowStride, s.a.numRows(*rt.step), s.a.cols, cap, s.out.data, s.out.rowStride);
  };
}

BoundOp bindGeglu(OpBinding& b) {
  const spec::Binary s = spec::binary(b);
  const bool tanh = spec::geluIsTanh(b);
  return [s, tanh](const StepRuntime& rt) {
    gegluKernel(rt.env, s.a.data, s.a.rowStride, s.b.data, s.b.rowStride, s.a.numRows(*rt.step), s.a.cols, tanh,
                s.out.data, s.out.rowStride);
  };
}

}  // namespace ops
}  // namespace kiln
