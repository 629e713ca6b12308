// linear: a cuBLASLt GEMM with a float32 bias epilogue, over token rows or logit rows. Its input is of
// the weight's dtype in the engines Kiln builds (activation-dtypes.ts); any other input is converted
// into scratch first, so every well-formed header runs.
#include "kiln/backends/cuda/ops/ops.h"

namespace kiln {
namespace cuda {
namespace ops {

BoundOp bindLinear(OpBinding& b) {
  const spec::Linear s = spec::linear(b);
  CudaBackend* be = &backendOf(b);
  const Matrix x = be->value(s.x);
  const Matrix y = be->value(s.y);
  if (s.dtype == DType::F32 && y.dtype != DType::F32) {
    b.fail("output 0 is " + std::string(dtypeName(y.dtype)) + " but a float32 weight's GEMM writes float32");
  }
  const bool convert = x.dtype != s.dtype;
  if (convert) be->reserveScratch(static_cast<size_t>(maxRowsOf(b, s.x) * s.K) * dtypeSize(s.dtype));
  return [=](const StepRuntime& rt) {
    const int64_t rows = s.x.numRows(*rt.step);
    Matrix in = x;
    if (convert) {
      in = Matrix{be->scratch(), s.dtype, s.K};
      elementwise(be->stream(), Elementwise::Copy, x, x, rows, s.K, 0.0f, in);
    }
    be->gemm().linear(s.dtype, in.data, rows, in.stride, s.weight, s.N, s.K, s.bias, y.dtype, y.data, y.stride);
  };
}

}  // namespace ops
}  // namespace cuda
}  // namespace kiln
