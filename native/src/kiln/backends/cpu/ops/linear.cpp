// linear: y[R, N] = x[R, K] . weight[N, K]^T (+ bias[N]); works on token rows or logit rows alike.
// x is float32; with attr bf16Inputs (an engine built with --bf16-linear-inputs) it is read rounded to
// bfloat16, as cuda engines store a linear's input (decision 0007), and the AVX512_BF16 set multiplies
// bfloat16 pairs natively. int4 weights (weight-only, dtype.h) go to linearInt4Kernel.
#include "kiln/backends/cpu/ops/ops.h"

namespace kiln {
namespace ops {

BoundOp bindLinear(OpBinding& b) {
  const spec::Linear s = spec::linear(b);
  // Fused neighbours are written into cuda engines only (the builder's lower/fuse-linear-neighbours.ts).
  if (s.fused()) b.fail("a linear with a fused prologue or epilogue runs on cuda only");
  if (s.dtype == DType::I4) {
    return [s](const StepRuntime& rt) {
      linearInt4Kernel(rt.env, s.x.data, s.x.numRows(*rt.step), s.x.rowStride, s.weight, s.N, s.K, s.groupSize, s.bias,
                       s.y.data, s.y.rowStride);
    };
  }
  return [s](const StepRuntime& rt) {
    linearKernel(rt.env, s.x.data, s.x.numRows(*rt.step), s.x.rowStride, s.weight, s.dtype, s.N, s.K, s.bias, s.y.data,
                 s.y.rowStride, s.bf16Inputs);
  };
}

}  // namespace ops
}  // namespace kiln
