// moe: routing on the device, then each expert's SwiGLU MLP as cuBLASLt GEMMs over all the step's rows,
// accumulated in float32 (in expert order, as the CPU kernel and transformers' index_add_ loop) with
// each row's routing weight (0 for the rows not routed to it). Dense over rows so that nothing waits on
// the host: E / topK times the FLOPs of a grouped GEMM, the price of correctness first.
#include "kiln/backends/cuda/ops/ops.h"

namespace kiln {
namespace cuda {
namespace ops {

namespace {

size_t align256(size_t n) { return (n + 255) / 256 * 256; }

}  // namespace

BoundOp bindMoe(OpBinding& b) {
  const spec::Moe s = spec::moe(b);
  expectActivationDType(b, s.routerDType, "router");
  expectActivationDType(b, s.expertDType, "gate");
  CudaBackend* be = &backendOf(b);
  const int64_t maxRows = s.x.rows == RowsKind::Tokens ? b.facts().maxNumTokens : b.facts().maxLogitRows;
  const size_t elem = dtypeSize(b.facts().activationDType);
  const int64_t E = s.numExperts, H = s.hidden, I = s.intermediate;
  const size_t weightsBytes = align256(static_cast<size_t>(maxRows * E) * sizeof(float));
  const size_t accBytes = align256(static_cast<size_t>(maxRows * H) * sizeof(float));
  const size_t midBytes = align256(static_cast<size_t>(maxRows * I) * elem);
  const size_t outBytes = align256(static_cast<size_t>(maxRows * H) * elem);
  be->reserveScratch(weightsBytes + accBytes + 2 * midBytes + outBytes);
  const void* x = be->value(s.x);
  void* y = be->value(s.y);
  return [=](const StepRuntime& rt) {
    const int64_t T = s.x.numRows(*rt.step);
    if (T <= 0) return;
    const DType t = be->dtype();
    cudaStream_t stream = be->stream();
    char* scratch = static_cast<char*>(be->scratch());
    float* weights = reinterpret_cast<float*>(scratch);
    float* acc = reinterpret_cast<float*>(scratch + weightsBytes);
    char* g = scratch + weightsBytes + accBytes;
    char* u = g + midBytes;
    char* d = u + midBytes;
    moeRoute(stream, t, x, T, s.x.rowStride, s.router, E, H, s.topK, s.normalizeTopK, weights);
    check(cudaMemsetAsync(acc, 0, static_cast<size_t>(T * H) * sizeof(float), stream), "cudaMemsetAsync (moe)");
    for (int64_t e = 0; e < E; ++e) {
      const char* gateE = static_cast<const char*>(s.gate) + static_cast<size_t>(e * I * H) * elem;
      const char* upE = static_cast<const char*>(s.up) + static_cast<size_t>(e * I * H) * elem;
      const char* downE = static_cast<const char*>(s.down) + static_cast<size_t>(e * H * I) * elem;
      be->gemm().linear(t, x, T, s.x.rowStride, gateE, I, H, nullptr, g, I);
      be->gemm().linear(t, x, T, s.x.rowStride, upE, I, H, nullptr, u, I);
      elementwise(stream, t, Elementwise::Swiglu, g, I, u, I, T, I, 0.0f, g, I);
      be->gemm().linear(t, g, T, I, downE, H, I, nullptr, d, H);
      moeAccumulate(stream, t, d, T, H, weights, E, e, acc);
    }
    fromFloat32(stream, t, acc, T, H, y, s.y.rowStride);
  };
}

}  // namespace ops
}  // namespace cuda
}  // namespace kiln
