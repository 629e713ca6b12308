// moe: routing on the device, then each expert's SwiGLU MLP as cuBLASLt GEMMs over all the step's rows,
// accumulated in float32 (in expert order, as the CPU kernel and transformers' index_add_ loop) with
// each row's routing weight (0 for the rows not routed to it). Dense over rows so that nothing waits on
// the host: E / topK times the FLOPs of a grouped GEMM, the price of correctness first. GEMM outputs
// are float32; the GEMM inputs are converted to the experts' dtype.
#include "kiln/backends/cuda/ops/ops.h"

namespace kiln {
namespace cuda {
namespace ops {

BoundOp bindMoe(OpBinding& b) {
  const spec::Moe s = spec::moe(b);
  CudaBackend* be = &backendOf(b);
  const int64_t maxRows = maxRowsOf(b, s.x);
  const DType et = s.expertDType;
  const size_t esize = dtypeSize(et);
  const int64_t E = s.numExperts, H = s.hidden, I = s.intermediate;
  // Scratch: routing weights, accumulator, x in the experts' dtype, gate and up outputs, their SwiGLU,
  // the down projection's output.
  const size_t weightsBytes = align256(static_cast<size_t>(maxRows * E) * sizeof(float));
  const size_t accBytes = align256(static_cast<size_t>(maxRows * H) * sizeof(float));
  const size_t xBytes = align256(static_cast<size_t>(maxRows * H) * esize);
  const size_t midBytes = align256(static_cast<size_t>(maxRows * I) * sizeof(float));
  const size_t actBytes = align256(static_cast<size_t>(maxRows * I) * esize);
  be->reserveScratch(weightsBytes + 2 * accBytes + xBytes + 2 * midBytes + actBytes);
  const Matrix x = be->value(s.x);
  const Matrix y = be->value(s.y);
  return [=](const StepRuntime& rt) {
    const int64_t T = s.x.numRows(*rt.step);
    if (T <= 0) return;
    cudaStream_t stream = be->stream();
    char* p = static_cast<char*>(be->scratch());
    float* weights = reinterpret_cast<float*>(p);
    float* acc = reinterpret_cast<float*>(p += weightsBytes);
    const Matrix xs{p += accBytes, et, H};
    const Matrix g{p += xBytes, DType::F32, I};
    const Matrix u{p += midBytes, DType::F32, I};
    const Matrix a{p += midBytes, et, I};
    const Matrix d{p += actBytes, DType::F32, H};
    moeRoute(stream, x, T, s.router, s.routerDType, E, H, s.topK, s.normalizeTopK, weights);
    elementwise(stream, Elementwise::Copy, x, x, T, H, 0.0f, xs);
    check(cudaMemsetAsync(acc, 0, static_cast<size_t>(T * H) * sizeof(float), stream), "cudaMemsetAsync (moe)");
    for (int64_t e = 0; e < E; ++e) {
      const char* gateE = static_cast<const char*>(s.gate) + static_cast<size_t>(e * I * H) * esize;
      const char* upE = static_cast<const char*>(s.up) + static_cast<size_t>(e * I * H) * esize;
      const char* downE = static_cast<const char*>(s.down) + static_cast<size_t>(e * H * I) * esize;
      be->gemm().linear(et, xs.data, T, H, gateE, I, H, nullptr, DType::F32, g.data, I);
      be->gemm().linear(et, xs.data, T, H, upE, I, H, nullptr, DType::F32, u.data, I);
      elementwise(stream, Elementwise::Swiglu, g, u, T, I, 0.0f, a);
      be->gemm().linear(et, a.data, T, I, downE, H, I, nullptr, DType::F32, d.data, H);
      moeAccumulate(stream, d, T, H, weights, E, e, acc);
    }
    elementwise(stream, Elementwise::Copy, Matrix{acc, DType::F32, H}, Matrix{acc, DType::F32, H}, T, H, 0.0f, y);
  };
}

}  // namespace ops
}  // namespace cuda
}  // namespace kiln
