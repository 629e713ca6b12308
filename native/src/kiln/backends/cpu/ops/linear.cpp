// linear: y[R, N] = x[R, K] . weight[N, K]^T (+ bias[N]); works on token rows or logit rows alike.
// With bfloat16 weights x is read as bfloat16 (rounded), as cuda engines store a linear's input
// (decision 0007): the AVX512_BF16 set then multiplies bfloat16 pairs natively. int8 weights read x as it
// is (float32): the codes are widened exactly, so the only error is the weights' own quantization.
#include "kiln/backends/cpu/ops/ops.h"

namespace kiln {
namespace ops {

BoundOp bindLinear(OpBinding& b) {
  const spec::Linear s = spec::linear(b);
  return [s](const StepRuntime& rt) {
    linearKernel(rt.env, s.x.data, s.x.numRows(*rt.step), s.x.rowStride, s.weight, s.dtype, s.N, s.K, s.bias, s.y.data,
                 s.y.rowStride, /*bf16Activations=*/s.dtype == DType::BF16);
  };
}

}  // namespace ops
}  // namespace kiln
