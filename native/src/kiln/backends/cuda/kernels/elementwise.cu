// add, mul, silu, swiglu, gelu, geglu, relu, softcap, dtype conversion (and the bias add of a linear
// without an epilogue): one thread per element, float32 math as the CPU kernels.
#include "kiln/backends/cuda/kernels/common.cuh"
#include "kiln/backends/cuda/kernels/kernels.h"

namespace kiln {
namespace cuda {

namespace {

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }
// As transformers' GELUActivation (erf) and gelu_pytorch_tanh (tanh).
__device__ __forceinline__ float gelu(float x, bool tanhForm) {
  if (tanhForm) return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
  return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
}

template <Elementwise Op>
__global__ void elementwiseKernel(ConstMatrix a, ConstMatrix b, int64_t rows, int64_t cols, float param, Matrix out) {
  startAfterPriorKernels();
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    const float x = load(a.data, a.dtype, r * a.stride + c);
    float y;
    if constexpr (Op == Elementwise::Add) y = x + load(b.data, b.dtype, r * b.stride + c);
    else if constexpr (Op == Elementwise::Mul) y = x * load(b.data, b.dtype, r * b.stride + c);
    else if constexpr (Op == Elementwise::Silu) y = silu(x);
    else if constexpr (Op == Elementwise::Swiglu) y = silu(x) * load(b.data, b.dtype, r * b.stride + c);
    else if constexpr (Op == Elementwise::Gelu) y = gelu(x, false);
    else if constexpr (Op == Elementwise::GeluTanh) y = gelu(x, true);
    else if constexpr (Op == Elementwise::Geglu) y = gelu(x, false) * load(b.data, b.dtype, r * b.stride + c);
    else if constexpr (Op == Elementwise::GegluTanh) y = gelu(x, true) * load(b.data, b.dtype, r * b.stride + c);
    else if constexpr (Op == Elementwise::Relu) y = x > 0.0f ? x : 0.0f;
    else if constexpr (Op == Elementwise::Softcap) y = param * tanhf(x / param);
    else y = x;  // Copy
    store(out.data, out.dtype, r * out.stride + c, y);
  }
}

__global__ void addBiasKernel(Matrix y, int64_t rows, const float* bias, int64_t N) {
  startAfterPriorKernels();
  const int64_t n = rows * N;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / N, c = i % N;
    store(y.data, y.dtype, r * y.stride + c, load(y.data, y.dtype, r * y.stride + c) + bias[c]);
  }
}

}  // namespace

void elementwise(cudaStream_t stream, Elementwise op, ConstMatrix a, ConstMatrix b, int64_t rows, int64_t cols,
                 float param, Matrix out) {
  if (rows <= 0 || cols <= 0) return;
  const unsigned blocks = blocksFor(rows * cols, 256);
#define KILN_CASE(OP)                                                                           \
  case Elementwise::OP:                                                                         \
    launch(elementwiseKernel<Elementwise::OP>, dim3(blocks), dim3(256), 0, stream, a, b, rows, cols, param, out); \
    return;
  switch (op) {
    KILN_CASE(Add) KILN_CASE(Mul) KILN_CASE(Silu) KILN_CASE(Swiglu) KILN_CASE(Gelu) KILN_CASE(GeluTanh)
    KILN_CASE(Geglu) KILN_CASE(GegluTanh) KILN_CASE(Relu) KILN_CASE(Softcap) KILN_CASE(Copy)
  }
#undef KILN_CASE
}

void addBias(cudaStream_t stream, Matrix y, int64_t rows, const float* bias, int64_t N) {
  if (rows <= 0 || N <= 0) return;
  launch(addBiasKernel, dim3(blocksFor(rows * N, 256)), dim3(256), 0, stream, y, rows, bias, N);
}

}  // namespace cuda
}  // namespace kiln
