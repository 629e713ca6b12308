// add, mul, silu, swiglu, gelu, geglu, relu, softcap (and the bias add of a linear without an epilogue):
// one thread per element, float32 math as the CPU kernels.
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

template <typename T, Elementwise Op>
__global__ void elementwiseKernel(const T* a, int64_t aStride, const T* b, int64_t bStride, int64_t rows, int64_t cols,
                                  float param, T* out, int64_t outStride) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    const float x = toF(a[r * aStride + c]);
    float y;
    if constexpr (Op == Elementwise::Add) y = x + toF(b[r * bStride + c]);
    else if constexpr (Op == Elementwise::Mul) y = x * toF(b[r * bStride + c]);
    else if constexpr (Op == Elementwise::Silu) y = silu(x);
    else if constexpr (Op == Elementwise::Swiglu) y = silu(x) * toF(b[r * bStride + c]);
    else if constexpr (Op == Elementwise::Gelu) y = gelu(x, false);
    else if constexpr (Op == Elementwise::GeluTanh) y = gelu(x, true);
    else if constexpr (Op == Elementwise::Geglu) y = gelu(x, false) * toF(b[r * bStride + c]);
    else if constexpr (Op == Elementwise::GegluTanh) y = gelu(x, true) * toF(b[r * bStride + c]);
    else if constexpr (Op == Elementwise::Relu) y = x > 0.0f ? x : 0.0f;
    else y = param * tanhf(x / param);  // Softcap
    out[r * outStride + c] = fromF<T>(y);
  }
}

template <typename T>
__global__ void addBiasKernel(T* y, int64_t rows, int64_t yStride, const float* bias, int64_t N) {
  const int64_t n = rows * N;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / N, c = i % N;
    y[r * yStride + c] = fromF<T>(toF(y[r * yStride + c]) + bias[c]);
  }
}

template <typename T, Elementwise Op>
void launch(cudaStream_t stream, const void* a, int64_t aStride, const void* b, int64_t bStride, int64_t rows,
            int64_t cols, float param, void* out, int64_t outStride) {
  const unsigned blocks = blocksFor(rows * cols, 256) > 65536 ? 65536 : blocksFor(rows * cols, 256);
  elementwiseKernel<T, Op><<<blocks, 256, 0, stream>>>(static_cast<const T*>(a), aStride, static_cast<const T*>(b),
                                                         bStride, rows, cols, param, static_cast<T*>(out), outStride);
}

}  // namespace

void elementwise(cudaStream_t stream, DType t, Elementwise op, const void* a, int64_t aStride, const void* b,
                 int64_t bStride, int64_t rows, int64_t cols, float param, void* out, int64_t outStride) {
  if (rows <= 0 || cols <= 0) return;
  dispatch(t, [&](auto z) {
    using T = decltype(z);
#define KILN_CASE(OP) \
  case Elementwise::OP: return launch<T, Elementwise::OP>(stream, a, aStride, b, bStride, rows, cols, param, out, outStride);
    switch (op) {
      KILN_CASE(Add) KILN_CASE(Mul) KILN_CASE(Silu) KILN_CASE(Swiglu) KILN_CASE(Gelu) KILN_CASE(GeluTanh)
      KILN_CASE(Geglu) KILN_CASE(GegluTanh) KILN_CASE(Relu) KILN_CASE(Softcap)
    }
#undef KILN_CASE
  });
}

void addBias(cudaStream_t stream, DType t, void* y, int64_t rows, int64_t yStride, const float* bias, int64_t N) {
  if (rows <= 0 || N <= 0) return;
  dispatch(t, [&](auto z) {
    using T = decltype(z);
    const unsigned blocks = blocksFor(rows * N, 256) > 65536 ? 65536 : blocksFor(rows * N, 256);
    addBiasKernel<T><<<blocks, 256, 0, stream>>>(static_cast<T*>(y), rows, yStride, bias, N);
  });
}

}  // namespace cuda
}  // namespace kiln
