// add, mul, silu, swiglu: elementwise over matrices of one shape (same rows kind, same cols).
#include "kiln/backends/cpu/ops/ops.h"

namespace kiln {
namespace ops {

namespace {

using BinaryKernel = void (*)(const KernelEnv&, const float*, int64_t, const float*, int64_t, int64_t, int64_t,
                              float*, int64_t);

BoundOp bindBinary(OpBinding& b, BinaryKernel kernel) {
  const spec::Binary s = spec::binary(b);
  return [s, kernel](const StepRuntime& rt) {
    kernel(rt.env, s.a.data, s.a.rowStride, s.b.data, s.b.rowStride, s.a.numRows(*rt.step), s.a.cols, s.out.data,
           s.out.rowStride);
  };
}

}  // namespace

BoundOp bindAdd(OpBinding& b) { return bindBinary(b, addKernel); }
BoundOp bindMul(OpBinding& b) { return bindBinary(b, mulKernel); }
BoundOp bindSwiglu(OpBinding& b) { return bindBinary(b, swigluKernel); }

BoundOp bindSilu(OpBinding& b) {
  const spec::Unary s = spec::unary(b);
  return [s](const StepRuntime& rt) {
    siluKernel(rt.env, s.a.data, s.a.rowStride, s.a.numRows(*rt.step), s.a.cols, s.out.data, s.out.rowStride);
  };
}

}  // namespace ops
}  // namespace kiln
