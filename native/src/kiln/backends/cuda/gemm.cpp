#include "kiln/backends/cuda/gemm.h"

#include <cublasLt.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

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
  // Planned while the stream was being captured, with the first heuristic result: tuned (re-planned) at
  // the first call outside a capture.
  bool provisional = false;
  ~Plan() {
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

// The real operands of the call that makes a plan: tuning times the candidates on them.
struct Gemm::Operands {
  const void* x;
  const void* w;
  void* y;
  const float* bias;
};

namespace {

constexpr int kTuneCandidates = 8;  // heuristic results asked for; split-K variants of the first join them
constexpr int kTuneRuns = 3;        // timed runs per candidate, after one untimed warm-up run
constexpr float kTuneMargin = 0.97f;  // another candidate replaces the heuristic's first when 3% faster
constexpr size_t kTuneFlushBytes = 64ull << 20;  // written before each timed run: more than the H200's 50 MB L2
static_assert(sizeof(cublasLtMatmulAlgo_t) == 8 * sizeof(uint64_t), "cublasLtMatmulAlgo_t is 64 bytes");

}  // namespace

Gemm::Gemm(cudaStream_t stream) : stream_(stream) {
  // KILN_CUDA_GEMV=0 sends every linear to cuBLASLt (for comparisons).
  const char* gemvSetting = std::getenv("KILN_CUDA_GEMV");
  gemvEnabled_ = !(gemvSetting && std::string(gemvSetting) == "0");
  // KILN_CUDA_GEMM_TUNE=1 chooses each shape's algorithm by timing (decision 0021: off by default, it
  // measured slower at concurrency 64 on the H200); otherwise cuBLASLt's first heuristic result.
  // KILN_CUDA_GEMM_TUNE_LOG=1 prints each tuning's outcome to stderr.
  const char* tuneSetting = std::getenv("KILN_CUDA_GEMM_TUNE");
  tune_ = tuneSetting && std::string(tuneSetting) == "1";
  const char* tuneLog = std::getenv("KILN_CUDA_GEMM_TUNE_LOG");
  tuneLog_ = tuneLog && std::string(tuneLog) == "1";
  cublasLtHandle_t handle = nullptr;
  checkLt(cublasLtCreate(&handle), "cublasLtCreate");
  handle_ = handle;
  check(cudaMalloc(&workspace_, kWorkspaceBytes), "cudaMalloc (cuBLASLt workspace)");
  workspaceBytes_ = kWorkspaceBytes;
  // Allocated here, before the engine sizes its KV cache from the free memory.
  if (tune_) check(cudaMalloc(&flush_, kTuneFlushBytes), "cudaMalloc (GEMM tuning's L2 flush)");
}

Gemm::~Gemm() {
  plans_.clear();
  if (flush_) cudaFree(flush_);
  if (tuneStart_) cudaEventDestroy(tuneStart_);
  if (tuneStop_) cudaEventDestroy(tuneStop_);
  if (workspace_) cudaFree(workspace_);
  if (handle_) cublasLtDestroy(static_cast<cublasLtHandle_t>(handle_));
}

bool Gemm::capturing() const {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  // On an error, assume a capture: then nothing is timed or synchronized.
  if (cudaStreamIsCapturing(stream_, &status) != cudaSuccess) {
    cudaGetLastError();
    return true;
  }
  return status != cudaStreamCaptureStatusNone;
}

bool Gemm::tune(Plan& p, const Operands& o, const void* candidateArray, int count, const char* shape) {
  const auto* candidates = static_cast<const cublasLtMatmulAlgo_t*>(candidateArray);
  if (count <= 1) return false;
  if (!tuneStart_) check(cudaEventCreate(&tuneStart_), "cudaEventCreate (GEMM tuning)");
  if (!tuneStop_) check(cudaEventCreate(&tuneStop_), "cudaEventCreate (GEMM tuning)");
  const cublasLtHandle_t handle = static_cast<cublasLtHandle_t>(handle_);
  if (p.biasEpilogue) {
    checkLt(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &o.bias, sizeof o.bias), "BIAS_POINTER");
  }
  const float alpha = 1.0f, beta = 0.0f;
  // Every candidate writes the real output (beta = 0: nothing is read from it); the caller runs the
  // chosen algorithm once more after this, so the result is the chosen one's whatever ran last.
  auto run = [&](const cublasLtMatmulAlgo_t& algo) {
    return cublasLtMatmul(handle, p.desc, &alpha, o.w, p.a, o.x, p.b, &beta, o.y, p.d, o.y, p.d, &algo, workspace_,
                          workspaceBytes_, stream_);
  };
  int best = -1;
  float bestMs = 0.0f, firstMs = -1.0f;
  for (int i = 0; i < count; ++i) {
    if (run(candidates[i]) != CUBLAS_STATUS_SUCCESS) continue;  // not launchable here after all: skip it
    bool ok = true;
    float ms = 0.0f;
    for (int r = 0; r < kTuneRuns && ok; ++r) {
      // Each timed run starts with the weights out of L2, as in a step, where every linear reads its own
      // matrix once: repeated runs would find a decode-sized matrix (8-23 MB) in the 50 MB L2 and favour
      // the kernels that are fast on cached data rather than those that stream memory well.
      if (flush_) check(cudaMemsetAsync(flush_, r, kTuneFlushBytes, stream_), "cudaMemsetAsync (GEMM tuning)");
      check(cudaEventRecord(tuneStart_, stream_), "cudaEventRecord (GEMM tuning)");
      ok = run(candidates[i]) == CUBLAS_STATUS_SUCCESS;
      check(cudaEventRecord(tuneStop_, stream_), "cudaEventRecord (GEMM tuning)");
      check(cudaEventSynchronize(tuneStop_), "a GEMM of the tuning");
      float runMs = 0.0f;
      check(cudaEventElapsedTime(&runMs, tuneStart_, tuneStop_), "cudaEventElapsedTime (GEMM tuning)");
      ms += runMs;
    }
    if (!ok) continue;
    if (i == 0) firstMs = ms;
    // cuBLASLt's first choice stays unless another is clearly faster: near-ties (small shapes, where
    // every candidate takes the same few microseconds) would otherwise be decided by timing noise, and
    // two processes would pick differently for nothing.
    const bool better = best < 0 || (best == 0 && firstMs >= 0 ? ms < kTuneMargin * bestMs : ms < bestMs);
    if (better) {
      best = i;
      bestMs = ms;
    }
  }
  if (best < 0) return false;
  p.algo = candidates[best];
  if (tuneLog_) {
    std::fprintf(stderr, "kiln gemm tune: %s%s: %d candidates, heuristic #0 %.2f us, chosen #%d %.2f us\n", shape,
                 p.biasEpilogue ? " + bias" : "", count, firstMs < 0 ? -1.0 : 1000.0 * firstMs / kTuneRuns, best,
                 1000.0 * bestMs / kTuneRuns);
  }
  return true;
}

Gemm::Plan& Gemm::plan(DType abType, DType yType, int64_t rows, int64_t xStride, int64_t N, int64_t K, int64_t yStride,
                       bool bias, uint32_t alignment, const Operands& operands) {
  const Key key{static_cast<int>(abType), static_cast<int>(yType), rows, xStride, N, K, yStride, bias, alignment};
  const bool tuning = tunes(rows);
  bool capture = false;
  auto it = plans_.find(key);
  if (it != plans_.end()) {
    if (!it->second->provisional) return *it->second;
    capture = capturing();
    if (capture) return *it->second;
    // A graph that captured this plan keeps its launches (cuBLASLt reads descriptors at the call): the
    // plan can be replaced.
    plans_.erase(it);
  } else if (tuning) {
    capture = capturing();
  }
  if (plans_.size() >= kMaxPlans) plans_.clear();
  if (tuned_.size() >= kMaxPlans) tuned_.clear();

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
  const cublasLtHandle_t handle = static_cast<cublasLtHandle_t>(handle_);
  // Row counts tune per power-of-two bucket: a 128-token prompt chunk, then one of 131 tokens, reuse the
  // first's choice, so a serving run with many step sizes times a handful of shapes, not hundreds.
  int64_t bucket = kTuneMinRows;
  while (bucket < rows) bucket *= 2;
  const auto tunedKeyOf = [&](bool withBias) {
    return TunedKey{static_cast<int>(abType), static_cast<int>(yType), N, K, withBias, alignment, bucket};
  };
  // The candidates of the plan being made: cuBLASLt's heuristic results in its order, then split-K variants.
  std::vector<cublasLtMatmulAlgo_t> candidates;
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
    cublasLtMatmulHeuristicResult_t results[kTuneCandidates] = {};
    int returned = 0;
    // Outside a capture a plan to be tuned asks for several candidates; inside one, or when its bucket
    // was tuned already, only the first can be used.
    const int wanted = tuning && !capture && tuned_.count(tunedKeyOf(withBias)) == 0 ? kTuneCandidates : 1;
    const cublasStatus_t status =
        cublasLtMatmulAlgoGetHeuristic(handle, p->desc, p->a, p->b, p->d, p->d, pref, wanted, results, &returned);
    if (status != CUBLAS_STATUS_SUCCESS || returned == 0) return nullptr;
    candidates.clear();
    for (int i = 0; i < returned; ++i) {
      if (results[i].state == CUBLAS_STATUS_SUCCESS && results[i].workspaceSize <= workspaceBytes_) candidates.push_back(results[i].algo);
    }
    if (candidates.empty()) return nullptr;
    p->algo = candidates.front();
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
  if (tuning) {
    const TunedKey tunedKey = tunedKeyOf(p->biasEpilogue);
    bool chosen = false;
    auto known = tuned_.find(tunedKey);
    if (known != tuned_.end()) {
      // A bucket's algorithm was chosen at another row count: cuBLASLt says whether it runs at this one.
      cublasLtMatmulAlgo_t algo;
      std::memcpy(&algo, known->second.data(), sizeof algo);
      cublasLtMatmulHeuristicResult_t checked{};
      if (cublasLtMatmulAlgoCheck(handle, p->desc, p->a, p->b, p->d, p->d, &algo, &checked) == CUBLAS_STATUS_SUCCESS &&
          checked.state == CUBLAS_STATUS_SUCCESS && checked.workspaceSize <= workspaceBytes_) {
        p->algo = algo;
        chosen = true;
      }
    }
    // Otherwise this row count is timed on its own: a whole candidate list when the bucket is new, else
    // (the bucket's algorithm does not run here) the first heuristic result against its split-K variants.
    if (!chosen && capture) {
      p->provisional = true;  // the first heuristic result for the graph; tuned at the next eager call
      ++provisionalPlans_;
    } else if (!chosen) {
      addSplitKVariants(p->desc, p->a, p->b, p->d, &candidates);
      const std::string shape = std::string(dtypeName(abType)) + " -> " + dtypeName(yType) + ", rows " + std::to_string(rows) +
                                " (bucket " + std::to_string(bucket) + "), N " + std::to_string(N) + ", K " + std::to_string(K);
      tune(*p, operands, candidates.data(), static_cast<int>(candidates.size()), shape.c_str());
      // Kept for the bucket even when there was nothing to time (a single candidate): then other row
      // counts of the bucket, captured in a graph, need not wait for an eager step.
      if (known == tuned_.end()) {
        std::array<uint64_t, 8> bits;
        std::memcpy(bits.data(), &p->algo, sizeof p->algo);
        tuned_.emplace(tunedKey, bits);
      }
    }
  }
  Plan& ref = *p;
  plans_.emplace(key, std::move(p));
  return ref;
}

// Split-K variants of the first candidate (2 and 4 slices of K, partial sums reduced in float32): for the
// skinny shapes of prefill and batched decode, where N / tile x rows / tile leaves SMs idle, splitting K
// fills them. Only variants cuBLASLt's AlgoCheck accepts within the workspace join.
void Gemm::addSplitKVariants(void* descPtr, void* aPtr, void* bPtr, void* dPtr, void* candidatesPtr) const {
  auto* candidates = static_cast<std::vector<cublasLtMatmulAlgo_t>*>(candidatesPtr);
  if (candidates->empty()) return;
  const cublasLtHandle_t handle = static_cast<cublasLtHandle_t>(handle_);
  const auto desc = static_cast<cublasLtMatmulDesc_t>(descPtr);
  const auto a = static_cast<cublasLtMatrixLayout_t>(aPtr), b = static_cast<cublasLtMatrixLayout_t>(bPtr),
             d = static_cast<cublasLtMatrixLayout_t>(dPtr);
  const cublasLtMatmulAlgo_t base = candidates->front();
  int32_t splitKSupport = 0;
  uint32_t reductionMask = 0;
  size_t written = 0;
  if (cublasLtMatmulAlgoCapGetAttribute(&base, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT, &splitKSupport, sizeof splitKSupport,
                                        &written) != CUBLAS_STATUS_SUCCESS ||
      !splitKSupport) {
    return;
  }
  if (cublasLtMatmulAlgoCapGetAttribute(&base, CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK, &reductionMask, sizeof reductionMask,
                                        &written) != CUBLAS_STATUS_SUCCESS) {
    return;
  }
  uint32_t scheme = 0;
  if (reductionMask & CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE) {
    scheme = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
  } else if (reductionMask & CUBLASLT_REDUCTION_SCHEME_INPLACE) {
    scheme = CUBLASLT_REDUCTION_SCHEME_INPLACE;
  } else {
    return;
  }
  for (uint32_t splits : {2u, 4u}) {
    cublasLtMatmulAlgo_t algo = base;
    if (cublasLtMatmulAlgoConfigSetAttribute(&algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splits, sizeof splits) != CUBLAS_STATUS_SUCCESS ||
        cublasLtMatmulAlgoConfigSetAttribute(&algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme, sizeof scheme) !=
            CUBLAS_STATUS_SUCCESS) {
      continue;
    }
    cublasLtMatmulHeuristicResult_t checked{};
    if (cublasLtMatmulAlgoCheck(handle, desc, a, b, d, d, &algo, &checked) == CUBLAS_STATUS_SUCCESS &&
        checked.state == CUBLAS_STATUS_SUCCESS && checked.workspaceSize <= workspaceBytes_) {
      candidates->push_back(algo);
    }
  }
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
  Plan& p = plan(abType, yType, rows, xStride, N, K, yStride, bias != nullptr, alignment, Operands{x, w, y, bias});
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
