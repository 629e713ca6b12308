#pragma once
// Linear layers through cuBLASLt: y[R, N] = x[R, K] . w[N, K]^T (+ bias[N]), row-major with row strides,
// x and w of one type (`abType`), y of that type or float32, float32 accumulation (float32 engines:
// plain FP32, TF32 off), the bias added by cuBLASLt's epilogue. Up to kMaxGemvRows rows of 16-bit
// operands go to Kiln's own GEMV kernel instead (kernels/gemv.cu). Plans (descriptors, layouts and the heuristic's algorithm) are
// cached per shape, strides and alignment, so a step only pays for cublasLtMatmul itself.
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "kiln/dtype.h"

namespace kiln {
namespace cuda {

class Gemm {
 public:
  explicit Gemm(cudaStream_t stream);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // Whether small-batch linears go to Kiln's GEMV (KILN_CUDA_GEMV=0: no).
  bool gemvEnabled() const { return gemvEnabled_; }

  void linear(DType abType, const void* x, int64_t rows, int64_t xStride, const void* w, int64_t N, int64_t K,
              const float* bias, DType yType, void* y, int64_t yStride);

 private:
  struct Plan;
  using Key = std::tuple<int, int, int64_t, int64_t, int64_t, int64_t, int64_t, bool, uint32_t>;
  Plan& plan(DType abType, DType yType, int64_t rows, int64_t xStride, int64_t N, int64_t K, int64_t yStride, bool bias,
             uint32_t alignment);

  cudaStream_t stream_;
  bool gemvEnabled_ = true;
  void* handle_ = nullptr;  // cublasLtHandle_t
  void* workspace_ = nullptr;
  size_t workspaceBytes_ = 0;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace cuda
}  // namespace kiln
