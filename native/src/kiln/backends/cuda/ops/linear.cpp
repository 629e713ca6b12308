// linear: cuBLASLt GEMM with a float32 bias epilogue, over token rows or logit rows.
#include "kiln/backends/cuda/ops/ops.h"

namespace kiln {
namespace cuda {
namespace ops {

BoundOp bindLinear(OpBinding& b) {
  const spec::Linear s = spec::linear(b);
  expectActivationDType(b, s.dtype, "weight");
  CudaBackend* be = &backendOf(b);
  const void* x = be->value(s.x);
  void* y = be->value(s.y);
  return [=](const StepRuntime& rt) {
    be->gemm().linear(be->dtype(), x, s.x.numRows(*rt.step), s.x.rowStride, s.weight, s.N, s.K, s.bias, y, s.y.rowStride);
  };
}

}  // namespace ops
}  // namespace cuda
}  // namespace kiln
