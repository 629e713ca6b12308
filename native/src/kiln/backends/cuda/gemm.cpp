#include "kiln/backends/cuda/gemm.h"

#include <cublasLt.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

#include "kiln/backends/cuda/cuda_check.h"
#include "kiln/backends/cuda/kernels/kernels.h"

namespace kiln {
namespace cuda {

namespace {

constexpr size_t kWorkspaceBytes = 32ull << 20;  // cuBLAS's recommendation for Hopper
constexpr size_t kMaxPlans = 4096;               // a new shape past this starts the cache afresh

void checkLt(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw std::runtime_error(std::string("cuBLASLt error in ") + what + ": status " + std::to_string(static_cast<int>(status)));
  }
}

cudaDataType_t cudaTypeOf(DType t) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::F16: return CUDA_R_16F;
    case DType::BF16: return CUDA_R_16BF;
    // FP8 linears (kernels/fp8.cu): e4m3 codes times e4m3 weights, float32 out. The layout here is TN (A
    // transposed), the only one Hopper's FP8 GEMM takes; scales stay 1 (the epilogue kernel applies them).
    case DType::F8E4M3: return CUDA_R_8F_E4M3;
    default: throw std::runtime_error("cuda linear: activations must be float32, float16 or bfloat16");
  }
}

// The largest power of two (up to 256) dividing every address and row pitch cuBLASLt will see.
uint32_t alignmentOf(std::initializer_list<uintptr_t> values) {
  uint32_t a = 256;
  for (uintptr_t v : values) {
    while (a > 1 && v % a != 0) a /= 2;
  }
  return a;
}

}  // namespace

struct Gemm::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool biasEpilogue = false;  // else the bias is added by a kernel after the GEMM
  ~Plan() {
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

Gemm::Gemm(cudaStream_t stream) : stream_(stream) {
  // KILN_CUDA_GEMV=0 sends every linear to cuBLASLt (for comparisons).
  const char* gemvSetting = std::getenv("KILN_CUDA_GEMV");
  gemvEnabled_ = !(gemvSetting && std::string(gemvSetting) == "0");
  cublasLtHandle_t handle = nullptr;
  checkLt(cublasLtCreate(&handle), "cublasLtCreate");
  handle_ = handle;
  check(cudaMalloc(&workspace_, kWorkspaceBytes), "cudaMalloc (cuBLASLt workspace)");
  workspaceBytes_ = kWorkspaceBytes;
}

Gemm::~Gemm() {
  plans_.clear();
  if (workspace_) cudaFree(workspace_);
  if (handle_) cublasLtDestroy(static_cast<cublasLtHandle_t>(handle_));
}

Gemm::Plan& Gemm::plan(DType abType, DType yType, int64_t rows, int64_t xStride, int64_t N, int64_t K, int64_t yStride,
                       bool bias, uint32_t alignment) {
  const Key key{static_cast<int>(abType), static_cast<int>(yType), rows, xStride, N, K, yStride, bias, alignment};
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;
  if (plans_.size() >= kMaxPlans) plans_.clear();

  // Column-major view of the row-major problem: D[N, R] = op(A)[N, K] . B[K, R] with A = w as a K x N
  // matrix (ld K) transposed, B = x as K x R (ld xStride), D = y as N x R (ld yStride).
  const cudaDataType_t type = cudaTypeOf(abType);
  const cudaDataType_t outType = cudaTypeOf(yType);
  cublasLtMatmulPreference_t pref = nullptr;
  checkLt(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
  const uint64_t workspace = workspaceBytes_;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof workspace);
  for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
    cublasLtMatmulPreferenceSetAttribute(pref, attr, &alignment, sizeof alignment);
  }
  // One fresh plan per attempt: a descriptor that once carried a bias type is not a plain one again.
  auto attempt = [&](bool withBias) -> std::unique_ptr<Plan> {
    auto p = std::make_unique<Plan>();
    checkLt(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
    const cublasOperation_t transA = CUBLAS_OP_T, transB = CUBLAS_OP_N;
    checkLt(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &transA, sizeof transA), "TRANSA");
    checkLt(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &transB, sizeof transB), "TRANSB");
    if (withBias) {
      const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
      const cudaDataType_t biasType = CUDA_R_32F;
      if (cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue) !=
              CUBLAS_STATUS_SUCCESS ||
          cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &biasType, sizeof biasType) !=
              CUBLAS_STATUS_SUCCESS) {
        return nullptr;
      }
    }
    checkLt(cublasLtMatrixLayoutCreate(&p->a, type, static_cast<uint64_t>(K), static_cast<uint64_t>(N), K), "layout A");
    checkLt(cublasLtMatrixLayoutCreate(&p->b, type, static_cast<uint64_t>(K), static_cast<uint64_t>(rows), xStride), "layout B");
    checkLt(cublasLtMatrixLayoutCreate(&p->d, outType, static_cast<uint64_t>(N), static_cast<uint64_t>(rows), yStride), "layout D");
    cublasLtMatmulHeuristicResult_t result{};
    int returned = 0;
    const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(static_cast<cublasLtHandle_t>(handle_), p->desc, p->a,
                                                                 p->b, p->d, p->d, pref, 1, &result, &returned);
    if (status != CUBLAS_STATUS_SUCCESS || returned == 0) return nullptr;
    p->algo = result.algo;
    p->biasEpilogue = withBias;
    return p;
  };
  // A float32 bias on 16-bit outputs is not offered by every cuBLASLt version and shape: then a kernel
  // adds it after the GEMM.
  std::unique_ptr<Plan> p = bias ? attempt(true) : nullptr;
  if (!p) p = attempt(false);
  cublasLtMatmulPreferenceDestroy(pref);
  if (!p) {
    throw std::runtime_error("cuBLASLt has no algorithm for a " + std::string(dtypeName(abType)) + " -> " + dtypeName(yType) + " linear of [" +
                             std::to_string(rows) + ", " + std::to_string(K) + "] x [" + std::to_string(N) + ", " +
                             std::to_string(K) + "]^T (alignment " + std::to_string(alignment) + " bytes)");
  }
  Plan& ref = *p;
  plans_.emplace(key, std::move(p));
  return ref;
}

void Gemm::linear(DType abType, const void* x, int64_t rows, int64_t xStride, const void* w, int64_t N, int64_t K,
                  const float* bias, DType yType, void* y, int64_t yStride) {
  if (rows <= 0) return;
  if (gemvEnabled_ && gemvApplies(abType, x, rows, xStride, w, K)) {
    gemv(stream_, abType, x, rows, xStride, w, N, K, bias, Matrix{y, yType, yStride});
    return;
  }
  const uintptr_t elem = dtypeSize(abType);
  const uint32_t alignment = alignmentOf({reinterpret_cast<uintptr_t>(x), reinterpret_cast<uintptr_t>(w),
                                          reinterpret_cast<uintptr_t>(y), static_cast<uintptr_t>(xStride) * elem,
                                          static_cast<uintptr_t>(yStride) * dtypeSize(yType),
                                          static_cast<uintptr_t>(K) * elem});
  Plan& p = plan(abType, yType, rows, xStride, N, K, yStride, bias != nullptr, alignment);
  if (p.biasEpilogue) {
    checkLt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias), "BIAS_POINTER");
  }
  const float alpha = 1.0f, beta = 0.0f;
  checkLt(cublasLtMatmul(static_cast<cublasLtHandle_t>(handle_), p.desc, &alpha, w, p.a, x, p.b, &beta, y, p.d, y, p.d,
                         &p.algo, workspace_, workspaceBytes_, stream_),
          "cublasLtMatmul");
  if (bias && !p.biasEpilogue) addBias(stream_, Matrix{y, yType, yStride}, rows, bias, N);
}

}  // namespace cuda
}  // namespace kiln
