// Where a batch-1 decode step's time goes between kernels (issue 10, decision 0022). Kiln's own GEMV
// kernels (kernels/gemv.cu, compiled in) run a TinyLlama-shaped layer's chain as a decode step runs it:
//   QKV    gemvFused: add_rms_norm prologue (the previous down output + the residual), rope epilogue
//   attn   a stand-in: one block that waits for the QKV kernel and copies q (the real attention kernel
//          needs the paged cache; ncu puts it at ~8.5 us, mostly latency)
//   o      gemv (split-K 2)
//   gate/up gemvFused: add_rms_norm prologue, SwiGLU epilogue
//   down   gemv
// 22 layers captured in one CUDA graph with programmatic dependent launch, each layer's weights its own
// (1.9 GB of bfloat16, so nothing is found in L2), replayed and timed with events. Variants:
//   full            the chain as above
//   no attn         without the stand-in (o reads q)
//   narrow          every matrix 64 features wide (K as full): what each kernel costs beyond its bytes
//   <kernel> only   22 launches of one kernel of the layer, each on its own weights, same dependencies
//   ..., no norm    the fused kernels without their add_rms_norm prologue
// and the same with KILN_CUDA_PDL=0 when the environment sets it (or any switch gemv.cu reads, e.g.
// KILN_CUDA_GEMV_SPLIT=1, KILN_CUDA_GEMV_LONG_INFLIGHT=4). Build here or there (the binary built on the
// development machine ran on the GPU machine in session 14: carry it, no .gpu needed) and run there:
//
//   nvcc -O3 -std=c++17 -arch=sm_90 --expt-relaxed-constexpr -I native/src -o /tmp/chain \
//     tools/gpu/layer-chain-bench.cu native/src/kiln/backends/cuda/kernels/gemv.cu \
//     native/src/kiln/backends/cuda/kernels/launch.cu && /tmp/chain && KILN_CUDA_PDL=0 /tmp/chain
//
// Each line: µs per layer (median of 5 timings of 20 replays), and the weights' bytes per µs it implies.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "kiln/backends/cuda/kernels/common.cuh"
#include "kiln/backends/cuda/kernels/kernels.h"

using namespace kiln;
using namespace kiln::cuda;

#define CHECK(x)                                                                                  \
  do {                                                                                            \
    cudaError_t e = (x);                                                                          \
    if (e != cudaSuccess) {                                                                       \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e));      \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)

namespace {

constexpr int64_t kHidden = 2048, kHeads = 32, kKvHeads = 4, kHeadDim = 64, kMlp = 5632, kLayers = 22;
constexpr int64_t kQkv = (kHeads + 2 * kKvHeads) * kHeadDim;

// The attention stand-in: waits for the QKV kernel like every Kiln kernel, copies q to the output.
__global__ void attentionStandIn(const __nv_bfloat16* q, __nv_bfloat16* out, int64_t n) {
  startAfterPriorKernels();
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) out[i] = q[i];
}

__global__ void fill(__nv_bfloat16* p, int64_t n, uint32_t seed, float scale) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    p[i] = __float2bfloat16(((h & 0xffff) / 65535.0f - 0.5f) * scale);
  }
}

__nv_bfloat16* allocFilled(int64_t n, uint32_t seed, float scale) {
  __nv_bfloat16* p = nullptr;
  CHECK(cudaMalloc(&p, n * 2));
  fill<<<1024, 256>>>(p, n, seed, scale);
  CHECK(cudaGetLastError());
  return p;
}

struct LayerWeights {
  __nv_bfloat16 *qkv, *o, *gateUp, *down;
};

}  // namespace

int main() {
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaDeviceProp prop{};
  CHECK(cudaGetDeviceProperties(&prop, 0));

  // Activations (one token) and the norms' and rope's constants.
  __nv_bfloat16* downOut = allocFilled(kHidden, 1, 1.0f);
  __nv_bfloat16* residualA = allocFilled(kHidden, 2, 1.0f);
  __nv_bfloat16* residualB = allocFilled(kHidden, 3, 1.0f);
  __nv_bfloat16* q = allocFilled(kHidden, 4, 1.0f);
  __nv_bfloat16* ropedK = allocFilled(kKvHeads * kHeadDim, 5, 1.0f);
  __nv_bfloat16* v = allocFilled(kKvHeads * kHeadDim, 6, 1.0f);
  __nv_bfloat16* attn = allocFilled(kHidden, 7, 1.0f);
  __nv_bfloat16* oOut = allocFilled(kHidden, 8, 1.0f);
  __nv_bfloat16* act = allocFilled(kMlp, 9, 1.0f);
  __nv_bfloat16* normWeight = allocFilled(kHidden, 10, 0.1f);
  std::vector<float> invFreqHost(kHeadDim / 2);
  for (size_t i = 0; i < invFreqHost.size(); ++i) invFreqHost[i] = std::pow(10000.0f, -2.0f * i / kHeadDim);
  float* invFreq = nullptr;
  CHECK(cudaMalloc(&invFreq, invFreqHost.size() * 4));
  CHECK(cudaMemcpy(invFreq, invFreqHost.data(), invFreqHost.size() * 4, cudaMemcpyHostToDevice));
  // rope's (cos, sin) table, as the engine makes it (ropeCosSinTable): positions below 512.
  constexpr int64_t kTablePositions = 512;
  std::vector<float> cosSinHost(kTablePositions * kHeadDim);
  for (int64_t p = 0; p < kTablePositions; ++p)
    for (int64_t i = 0; i < kHeadDim / 2; ++i) {
      const double angle = static_cast<double>(static_cast<float>(p) * invFreqHost[i]);
      cosSinHost[(p * kHeadDim / 2 + i) * 2] = static_cast<float>(std::cos(angle));
      cosSinHost[(p * kHeadDim / 2 + i) * 2 + 1] = static_cast<float>(std::sin(angle));
    }
  float* cosSin = nullptr;
  CHECK(cudaMalloc(&cosSin, cosSinHost.size() * 4));
  CHECK(cudaMemcpy(cosSin, cosSinHost.data(), cosSinHost.size() * 4, cudaMemcpyHostToDevice));
  int32_t* positions = nullptr;
  CHECK(cudaMalloc(&positions, 4));
  const int32_t position = 200;
  CHECK(cudaMemcpy(positions, &position, 4, cudaMemcpyHostToDevice));

  // Weights: full width, and narrow (64 features of each matrix; the same K).
  std::vector<LayerWeights> full(kLayers);
  for (int64_t l = 0; l < kLayers; ++l) {
    const uint32_t s = static_cast<uint32_t>(100 + 4 * l);
    full[l] = {allocFilled(kQkv * kHidden, s, 0.05f), allocFilled(kHidden * kHidden, s + 1, 0.05f),
               allocFilled(2 * kMlp * kHidden, s + 2, 0.05f), allocFilled(kHidden * kMlp, s + 3, 0.05f)};
  }
  CHECK(cudaDeviceSynchronize());
  const double layerBytes = 2.0 * (kQkv * kHidden + kHidden * kHidden + 2 * kMlp * kHidden + kHidden * kMlp);

  bool withNorm = true;  // the fused kernels' add_rms_norm prologue (off: x goes in as it is)
  const auto norm = [&](GemvFusion& f, const __nv_bfloat16* addend, __nv_bfloat16* sum) {
    if (!withNorm) return;
    f.normWeight = normWeight;
    f.normWDType = DType::BF16;
    f.normEps = 1e-5f;
    f.addend = ConstMatrix(addend, DType::BF16, kHidden);
    f.sum = Matrix{sum, DType::BF16, kHidden};
  };
  // The kernels of one layer; `narrow` = 64 output features (qkv: 64 of q... one head of q, k, v each).
  const auto qkvKernel = [&](const LayerWeights& w, bool narrow) {
    GemvFusion f;
    norm(f, residualB, residualA);
    f.epilogue = GemvFusion::Rope;
    const int64_t heads = narrow ? 1 : kHeads, kvHeads = narrow ? 1 : kKvHeads;
    f.qCols = heads * kHeadDim;
    f.kCols = kvHeads * kHeadDim;
    f.headDim = kHeadDim;
    f.rotaryDim = kHeadDim;
    f.invFreq = invFreq;
    f.cosSin = cosSin;
    f.tablePositions = kTablePositions;
    f.attentionScaling = 1.0f;
    f.positions = positions;
    f.ropedK = Matrix{ropedK, DType::BF16, kKvHeads * kHeadDim};
    f.v = Matrix{v, DType::BF16, kKvHeads * kHeadDim};
    const int64_t N = (heads + 2 * kvHeads) * kHeadDim;
    gemvFused(stream, DType::BF16, ConstMatrix(downOut, DType::BF16, kHidden), 1, w.qkv, N, kHidden, nullptr, f,
              Matrix{q, DType::BF16, kHidden});
  };
  const auto attnKernel = [&]() {
    cudaLaunchConfig_t config{};
    config.gridDim = dim3(1);
    config.blockDim = dim3(256);
    config.stream = stream;
    cudaLaunchAttribute attribute[1];
    attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute[0].val.programmaticStreamSerializationAllowed = pdlEnabled() ? 1 : 0;
    config.attrs = attribute;
    config.numAttrs = 1;
    CHECK(cudaLaunchKernelEx(&config, attentionStandIn, static_cast<const __nv_bfloat16*>(q), attn, kHidden));
  };
  const auto oKernel = [&](const LayerWeights& w, bool narrow, bool standIn) {
    gemv(stream, DType::BF16, standIn ? attn : q, 1, kHidden, w.o, narrow ? 64 : kHidden, kHidden, nullptr,
         Matrix{oOut, DType::BF16, kHidden});
  };
  const auto gateUpKernel = [&](const LayerWeights& w, bool narrow) {
    GemvFusion f;
    norm(f, residualA, residualB);
    f.epilogue = GemvFusion::Swiglu;
    gemvFused(stream, DType::BF16, ConstMatrix(oOut, DType::BF16, kHidden), 1, w.gateUp, narrow ? 128 : 2 * kMlp, kHidden,
              nullptr, f, Matrix{act, DType::BF16, kMlp});
  };
  const auto downKernel = [&](const LayerWeights& w, bool narrow) {
    gemv(stream, DType::BF16, act, 1, kMlp, w.down, narrow ? 64 : kHidden, kMlp, nullptr, Matrix{downOut, DType::BF16, kHidden});
  };

  // Times `launches` captured in one graph: median over 5 timings of 20 replays, µs per replay.
  const auto timeGraph = [&](const std::function<void()>& launches) {
    cudaGraph_t graph;
    CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    launches();
    CHECK(cudaStreamEndCapture(stream, &graph));
    cudaGraphExec_t exec;
    CHECK(cudaGraphInstantiate(&exec, graph, 0));
    for (int r = 0; r < 3; ++r) CHECK(cudaGraphLaunch(exec, stream));
    CHECK(cudaStreamSynchronize(stream));
    cudaEvent_t t0, t1;
    CHECK(cudaEventCreate(&t0));
    CHECK(cudaEventCreate(&t1));
    std::vector<float> us;
    for (int t = 0; t < 5; ++t) {
      CHECK(cudaEventRecord(t0, stream));
      for (int r = 0; r < 20; ++r) CHECK(cudaGraphLaunch(exec, stream));
      CHECK(cudaEventRecord(t1, stream));
      CHECK(cudaEventSynchronize(t1));
      float ms = 0.0f;
      CHECK(cudaEventElapsedTime(&ms, t0, t1));
      us.push_back(1000.0f * ms / 20);
    }
    std::sort(us.begin(), us.end());
    CHECK(cudaGraphExecDestroy(exec));
    CHECK(cudaGraphDestroy(graph));
    CHECK(cudaEventDestroy(t0));
    CHECK(cudaEventDestroy(t1));
    return static_cast<double>(us[2]);
  };

  std::printf("layer-chain-bench: %s, %d SMs, programmatic dependent launch %s; %d layers, %.1f MB of weights a layer\n", prop.name,
              prop.multiProcessorCount, pdlEnabled() ? "on" : "off (KILN_CUDA_PDL=0)", static_cast<int>(kLayers), layerBytes / 1e6);
  const auto report = [&](const char* what, int kernelsPerLayer, double bytesPerLayer, double usPerStep) {
    const double perLayer = usPerStep / kLayers;
    std::printf("%-28s %8.2f us a layer  %6.2f us a kernel  %7.2f GB/s of weights\n", what, perLayer, perLayer / kernelsPerLayer,
                bytesPerLayer > 0 ? bytesPerLayer / perLayer / 1e3 : 0.0);
  };
  report("full", 5, layerBytes, timeGraph([&] {
           for (const auto& w : full) qkvKernel(w, false), attnKernel(), oKernel(w, false, true), gateUpKernel(w, false), downKernel(w, false);
         }));
  report("no attn", 4, layerBytes, timeGraph([&] {
           for (const auto& w : full) qkvKernel(w, false), oKernel(w, false, false), gateUpKernel(w, false), downKernel(w, false);
         }));
  report("narrow (64 features)", 5, 0, timeGraph([&] {
           for (const auto& w : full) qkvKernel(w, true), attnKernel(), oKernel(w, true, true), gateUpKernel(w, true), downKernel(w, true);
         }));
  report("narrow, no attn", 4, 0, timeGraph([&] {
           for (const auto& w : full) qkvKernel(w, true), oKernel(w, true, false), gateUpKernel(w, true), downKernel(w, true);
         }));
  report("attn stand-in only", 1, 0, timeGraph([&] {
           for (int64_t l = 0; l < kLayers; ++l) attnKernel();
         }));
  report("qkv only", 1, 2.0 * kQkv * kHidden, timeGraph([&] {
           for (const auto& w : full) qkvKernel(w, false);
         }));
  report("o only", 1, 2.0 * kHidden * kHidden, timeGraph([&] {
           for (const auto& w : full) oKernel(w, false, false);
         }));
  report("gate/up only", 1, 4.0 * kMlp * kHidden, timeGraph([&] {
           for (const auto& w : full) gateUpKernel(w, false);
         }));
  report("down only", 1, 2.0 * kHidden * kMlp, timeGraph([&] {
           for (const auto& w : full) downKernel(w, false);
         }));
  // The narrow kernels one kind at a time: each kind's own latency in a dependent chain, and the fused
  // kernels' again without their norm prologue.
  report("narrow qkv only", 1, 0, timeGraph([&] {
           for (const auto& w : full) qkvKernel(w, true);
         }));
  report("narrow o only", 1, 0, timeGraph([&] {
           for (const auto& w : full) oKernel(w, true, false);
         }));
  report("narrow gate/up only", 1, 0, timeGraph([&] {
           for (const auto& w : full) gateUpKernel(w, true);
         }));
  report("narrow down only", 1, 0, timeGraph([&] {
           for (const auto& w : full) downKernel(w, true);
         }));
  withNorm = false;
  report("narrow qkv only, no norm", 1, 0, timeGraph([&] {
           for (const auto& w : full) qkvKernel(w, true);
         }));
  report("narrow gate/up only, no norm", 1, 0, timeGraph([&] {
           for (const auto& w : full) gateUpKernel(w, true);
         }));
  report("full, no norms", 5, layerBytes, timeGraph([&] {
           for (const auto& w : full) qkvKernel(w, false), attnKernel(), oKernel(w, false, true), gateUpKernel(w, false), downKernel(w, false);
         }));
  return 0;
}
