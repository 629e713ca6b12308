#pragma once
// Linear layers through cuBLASLt: y[R, N] = x[R, K] . w[N, K]^T (+ bias[N]), row-major with row strides,
// x and w of one type (`abType`), y of that type or float32, float32 accumulation (float32 engines:
// plain FP32, TF32 off), the bias added by cuBLASLt's epilogue. Up to kMaxGemvRows rows of 16-bit
// operands go to Kiln's own GEMV kernel instead (kernels/gemv.cu). Plans (descriptors, layouts and the
// chosen algorithm) are cached per shape, strides and alignment, so a step only pays for cublasLtMatmul.
//
// Algorithm choice (KILN_CUDA_GEMM_TUNE, decision 0021): cuBLASLt's first heuristic result is a guess
// from a model of the GPU; at 16+ rows the GEMM is large enough for the guess to cost (a 128 x 256 tile
// over a 512-row prefill leaves most of the H200's 132 SMs idle). So, as TensorRT does when it builds an
// engine, the first plan of a shape with 16+ rows times up to kTuneCandidates of cuBLASLt's candidates
// (plus split-K variants of the first) on the real operands and keeps the fastest (when 3% faster than
// the first), per shape and power-of-two bucket of rows; other row counts of a tuned bucket reuse its
// algorithm where cublasLtMatmulAlgoCheck accepts it. Nothing is timed while the stream is being captured
// into a graph: such a plan takes the first heuristic result and is tuned at its next call outside one.
#include <cuda_runtime.h>

#include <array>
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
  // Whether a GEMM of `rows` rows has its algorithm chosen by timing (KILN_CUDA_GEMM_TUNE, 16+ rows).
  bool tunes(int64_t rows) const { return tune_ && rows >= kTuneMinRows; }
  static constexpr int64_t kTuneMinRows = 16;
  // How many plans were made during a capture without their timing (first heuristic result): the backend
  // compares it across a decode step's capture, and when it moved, drops the graph and runs the step
  // eagerly, so that the graph it captures next holds tuned plans.
  uint64_t provisionalPlans() const { return provisionalPlans_; }

  void linear(DType abType, const void* x, int64_t rows, int64_t xStride, const void* w, int64_t N, int64_t K,
              const float* bias, DType yType, void* y, int64_t yStride);

 private:
  struct Plan;
  struct Operands;
  using Key = std::tuple<int, int, int64_t, int64_t, int64_t, int64_t, int64_t, bool, uint32_t>;
  // A tuned algorithm per (types, N, K, bias, alignment, power-of-two row bucket).
  using TunedKey = std::tuple<int, int, int64_t, int64_t, bool, uint32_t, int64_t>;
  Plan& plan(DType abType, DType yType, int64_t rows, int64_t xStride, int64_t N, int64_t K, int64_t yStride, bool bias,
             uint32_t alignment, const Operands& operands);
  bool capturing() const;
  // Times the candidates of `p` on the operands, sets p.algo to the fastest and returns true; false when
  // none could be timed (p.algo unchanged).
  bool tune(Plan& p, const Operands& operands, const void* candidates, int count, const char* shape);
  // Appends split-K variants of (*candidates)[0] that cuBLASLt accepts (opaque cuBLASLt types: this header
  // does not include cublasLt.h).
  void addSplitKVariants(void* desc, void* a, void* b, void* d, void* candidates) const;

  cudaStream_t stream_;
  bool gemvEnabled_ = true;
  void* handle_ = nullptr;  // cublasLtHandle_t
  void* workspace_ = nullptr;
  size_t workspaceBytes_ = 0;
  std::map<Key, std::unique_ptr<Plan>> plans_;
  bool tune_ = false;
  std::map<TunedKey, std::array<uint64_t, 8>> tuned_;  // cublasLtMatmulAlgo_t's 64 bytes, by value
  cudaEvent_t tuneStart_ = nullptr, tuneStop_ = nullptr;
  void* flush_ = nullptr;  // evicts the weights from L2 before each timed run
  bool tuneLog_ = false;
  uint64_t provisionalPlans_ = 0;
};

}  // namespace cuda
}  // namespace kiln
