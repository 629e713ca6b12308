// linear: y[R, N] = x[R, K] . weight[N, K]^T (+ bias[N]); works on token rows or logit rows alike.
// x is float32; with attr bf16Inputs (an engine built with --bf16-linear-inputs) it is read rounded to
// bfloat16, as cuda engines store a linear's input (decision 0007), and the AVX512_BF16 set multiplies
// bfloat16 pairs natively. int4 weights (weight-only, dtype.h) go to linearInt4Kernel.
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kiln/backends/cpu/ops/ops.h"

namespace kiln {
namespace ops {

namespace {

// int4 linears quantize their input to int8 blocks (llama.cpp's Q4_0 x Q8_0, decision 0014) unless
// KILN_CPU_INT4_ACTIVATIONS=float32 when the engine is loaded: then they keep float32 inputs (W4A16, as the
// cuda int4 engines do), the reference those engines are tested against and a way to measure what the
// activations' rounding costs.
bool int4FloatActivations() {
  const char* v = std::getenv("KILN_CPU_INT4_ACTIVATIONS");
  if (!v || !*v || std::strcmp(v, "int8") == 0) return false;
  if (std::strcmp(v, "float32") == 0) return true;
  throw std::runtime_error(std::string("KILN_CPU_INT4_ACTIVATIONS=\"") + v + "\" is not int8 or float32");
}

}  // namespace

BoundOp bindLinear(OpBinding& b) {
  const spec::Linear s = spec::linear(b);
  // Fused neighbours are written into cuda engines only (the builder's lower/fuse-linear-neighbours.ts).
  if (s.fused()) b.fail("a linear with a fused prologue or epilogue runs on cuda only");
  if (s.dtype == DType::I4) {
    const bool floatActivations = int4FloatActivations();
    return [s, floatActivations](const StepRuntime& rt) {
      linearInt4Kernel(rt.env, s.x.data, s.x.numRows(*rt.step), s.x.rowStride, s.weight, s.N, s.K, s.groupSize, s.bias,
                       s.y.data, s.y.rowStride, floatActivations);
    };
  }
  return [s](const StepRuntime& rt) {
    linearKernel(rt.env, s.x.data, s.x.numRows(*rt.step), s.x.rowStride, s.weight, s.dtype, s.N, s.K, s.bias, s.y.data,
                 s.y.rowStride, s.bf16Inputs);
  };
}

}  // namespace ops
}  // namespace kiln
