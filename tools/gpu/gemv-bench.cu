// A micro-benchmark of batch-1 decode GEMV designs on the GPU machine, against a plain streaming read of
// the same bytes, for the matrix shapes of the TinyLlama-1.1B-shaped benchmark model (issue 10):
//
//   nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/gemv-bench tools/gpu/gemv-bench.cu && /tmp/gemv-bench
//
// Each figure is a CUDA graph of 64 launches of one kernel, each on another slice of a 1.5 GB pool (so
// that no launch finds its weights in L2, as in a decode step where every matrix is read once), launched
// with programmatic dependent launch as Kiln launches its kernels; the graph is replayed 20 times and
// the time per launch reported, with the bytes per second it implies. The read kernel is the bound a
// GEMV of that shape can approach: it loads the same bytes with the same grid and does nothing else.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#define CHECK(x)                                                                          \
  do {                                                                                    \
    cudaError_t e = (x);                                                                  \
    if (e != cudaSuccess) {                                                               \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e)); \
      std::exit(1);                                                                       \
    }                                                                                     \
  } while (0)

__device__ __forceinline__ uint4 loadStreaming(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}
__device__ __forceinline__ void waitPrior() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void allowNext() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }

__device__ __forceinline__ float dot8(const uint4& w, const uint4& x, float acc) {
  const __nv_bfloat162* a = reinterpret_cast<const __nv_bfloat162*>(&w);
  const __nv_bfloat162* b = reinterpret_cast<const __nv_bfloat162*>(&x);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 fa = __bfloat1622float2(a[i]), fb = __bfloat1622float2(b[i]);
    acc = fmaf(fa.x, fb.x, acc);
    acc = fmaf(fa.y, fb.y, acc);
  }
  return acc;
}
__device__ __forceinline__ float warpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The streaming read: each thread loads kIn vectors ahead, grid-stride over the matrix, xor-folds them.
template <int kIn>
__global__ void readKernel(const uint4* w, int64_t vectors, uint32_t* sink) {
  uint32_t acc = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  waitPrior();
  allowNext();
  for (; i < vectors; i += kIn * stride) {
    uint4 v[kIn];
#pragma unroll
    for (int u = 0; u < kIn; ++u)
      if (i + u * stride < vectors) v[u] = loadStreaming(w + i + u * stride);
#pragma unroll
    for (int u = 0; u < kIn; ++u)
      if (i + u * stride < vectors) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  if (acc == 0x12345678u) *sink = acc;
}

// Kiln's GEMV (kernels/gemv.cu, rows = 1): a warp per kRows features, kIn 16-byte vectors per lane and
// feature in flight, the first round loaded before the wait, double-buffered. kSplit warps share a
// feature (split-K): a block of kWarps warps has kWarps / kSplit feature groups; partial sums meet in
// shared memory.
template <int kIn, int kWarps, int kSplit, int kRows>
__global__ void __launch_bounds__(32 * kWarps) gemvKernel(const __nv_bfloat16* x, const __nv_bfloat16* w, int64_t N, int64_t K, float* y) {
  __shared__ float partial[kWarps][kRows];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t n0 = (static_cast<int64_t>(blockIdx.x) * (kWarps / kSplit) + warp / kSplit) * kRows;
  const int part = warp % kSplit;
  const int64_t vectors = K / 8;
  const int64_t per = (vectors + kSplit - 1) / kSplit;
  const int64_t lo = part * per;
  int64_t hi[kRows];
  const uint4* row[kRows];
#pragma unroll
  for (int j = 0; j < kRows; ++j) {
    hi[j] = n0 + j < N ? min(vectors, lo + per) : lo;
    row[j] = reinterpret_cast<const uint4*>(w + (n0 + j < N ? n0 + j : 0) * K);
  }
  const uint4* xv = reinterpret_cast<const uint4*>(x);
  constexpr int64_t kRound = 32 * kIn;
  uint4 wv[kRows][kIn];
#pragma unroll
  for (int j = 0; j < kRows; ++j)
#pragma unroll
    for (int u = 0; u < kIn; ++u) {
      const int64_t i = lo + lane + 32 * u;
      if (i < hi[j]) wv[j][u] = loadStreaming(row[j] + i);
    }
  waitPrior();
  allowNext();
  float acc[kRows];
#pragma unroll
  for (int j = 0; j < kRows; ++j) acc[j] = 0.0f;
  const int64_t end = lo + per;
  for (int64_t base = lo; base < end; base += kRound) {
    uint4 next[kRows][kIn];
#pragma unroll
    for (int j = 0; j < kRows; ++j)
#pragma unroll
      for (int u = 0; u < kIn; ++u) {
        const int64_t i = base + kRound + lane + 32 * u;
        if (i < hi[j]) next[j][u] = loadStreaming(row[j] + i);
      }
#pragma unroll
    for (int u = 0; u < kIn; ++u) {
      const int64_t i = base + lane + 32 * u;
      if (i < hi[0]) {
        const uint4 xi = xv[i];
#pragma unroll
        for (int j = 0; j < kRows; ++j)
          if (i < hi[j]) acc[j] = dot8(wv[j][u], xi, acc[j]);
      }
    }
#pragma unroll
    for (int j = 0; j < kRows; ++j)
#pragma unroll
      for (int u = 0; u < kIn; ++u) wv[j][u] = next[j][u];
  }
#pragma unroll
  for (int j = 0; j < kRows; ++j) acc[j] = warpSum(acc[j]);
  if (kSplit == 1) {
#pragma unroll
    for (int j = 0; j < kRows; ++j)
      if (lane == 0 && n0 + j < N) y[n0 + j] = acc[j];
    return;
  }
  if (lane == 0)
#pragma unroll
    for (int j = 0; j < kRows; ++j) partial[warp][j] = acc[j];
  __syncthreads();
  if (part == 0 && lane < kRows && n0 + lane < N) {
    float s = 0.0f;
    for (int p = 0; p < kSplit; ++p) s += partial[warp + p][lane];
    y[n0 + lane] = s;
  }
}

struct Shape {
  const char* name;
  int64_t N, K;
};

int main() {
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const size_t poolBytes = size_t{1536} << 20;
  void* pool = nullptr;
  CHECK(cudaMalloc(&pool, poolBytes));
  CHECK(cudaMemset(pool, 0x3c, poolBytes));
  __nv_bfloat16* x = nullptr;
  float* y = nullptr;
  uint32_t* sink = nullptr;
  CHECK(cudaMalloc(&x, 65536 * 2));
  CHECK(cudaMemset(x, 0x3c, 65536 * 2));
  CHECK(cudaMalloc(&y, 65536 * 4));
  CHECK(cudaMalloc(&sink, 4));
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaEvent_t t0, t1;
  CHECK(cudaEventCreate(&t0));
  CHECK(cudaEventCreate(&t1));

  const std::vector<Shape> shapes = {{"o 2048x2048", 2048, 2048}, {"qkv 2560x2048", 2560, 2048}, {"down 2048x5632", 2048, 5632},
                                     {"gate/up 11264x2048", 11264, 2048}, {"lm head 32000x2048", 32000, 2048}};
  constexpr int kLaunches = 64, kReplays = 20;

  // Times kLaunches launches of `launch(slice)` captured in one graph; returns microseconds per launch.
  auto timeGraph = [&](size_t bytes, auto&& launch) {
    const size_t slices = poolBytes / ((bytes + 4095) / 4096 * 4096);
    cudaGraph_t graph;
    CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    for (int l = 0; l < kLaunches; ++l) {
      const char* w = static_cast<const char*>(pool) + (l % slices) * ((bytes + 4095) / 4096 * 4096);
      launch(w);
    }
    CHECK(cudaStreamEndCapture(stream, &graph));
    cudaGraphExec_t exec;
    CHECK(cudaGraphInstantiate(&exec, graph, 0));
    CHECK(cudaGraphLaunch(exec, stream));
    CHECK(cudaStreamSynchronize(stream));
    CHECK(cudaEventRecord(t0, stream));
    for (int r = 0; r < kReplays; ++r) CHECK(cudaGraphLaunch(exec, stream));
    CHECK(cudaEventRecord(t1, stream));
    CHECK(cudaEventSynchronize(t1));
    float ms = 0.0f;
    CHECK(cudaEventElapsedTime(&ms, t0, t1));
    CHECK(cudaGraphExecDestroy(exec));
    CHECK(cudaGraphDestroy(graph));
    return 1000.0 * ms / (kLaunches * kReplays);
  };
  auto pdlLaunch = [&](auto kernel, dim3 grid, dim3 block, auto... args) {
    cudaLaunchConfig_t config{};
    config.gridDim = grid;
    config.blockDim = block;
    config.stream = stream;
    cudaLaunchAttribute attribute[1];
    attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute[0].val.programmaticStreamSerializationAllowed = 1;
    config.attrs = attribute;
    config.numAttrs = 1;
    CHECK(cudaLaunchKernelEx(&config, kernel, args...));
  };

  std::printf("gemv-bench: %d SMs; us per launch (TB/s), %d launches per graph, %d replays\n", sms, kLaunches, kReplays);
  for (const Shape& s : shapes) {
    const size_t bytes = static_cast<size_t>(s.N * s.K * 2);
    const int64_t vectors = static_cast<int64_t>(bytes / 16);
    auto report = [&](const char* what, double us) { std::printf("%-20s %-34s %8.2f us %6.2f TB/s\n", s.name, what, us, bytes / us / 1e6); };
    for (int wavesPerSm : {2, 4, 8}) {
      char label[64];
      std::snprintf(label, sizeof label, "read, 256 thr x %d blocks/SM, 8 in", wavesPerSm);
      report(label, timeGraph(bytes, [&](const char* w) {
               pdlLaunch(readKernel<8>, dim3(sms * wavesPerSm), dim3(256), reinterpret_cast<const uint4*>(w), vectors, sink);
             }));
    }
    const auto gemv = [&](const char* label, auto kernel, int warps, int split, int rowsPerWarp) {
      cudaFuncAttributes attributes{};
      CHECK(cudaFuncGetAttributes(&attributes, kernel));
      const int64_t featuresPerBlock = warps / split * rowsPerWarp;
      char full[96];
      std::snprintf(full, sizeof full, "%s [%d regs]", label, attributes.numRegs);
      report(full, timeGraph(bytes, [&](const char* w) {
               pdlLaunch(kernel, dim3(static_cast<unsigned>((s.N + featuresPerBlock - 1) / featuresPerBlock)), dim3(32 * warps),
                         static_cast<const __nv_bfloat16*>(x), reinterpret_cast<const __nv_bfloat16*>(w), s.N, s.K, y);
             }));
    };
    gemv("in 8, 8 warps (as shipped)", gemvKernel<8, 8, 1, 1>, 8, 1, 1);
    gemv("in 4, 8 warps", gemvKernel<4, 8, 1, 1>, 8, 1, 1);
    gemv("in 2, 8 warps", gemvKernel<2, 8, 1, 1>, 8, 1, 1);
    gemv("in 4, 8 warps, split 2", gemvKernel<4, 8, 2, 1>, 8, 2, 1);
    gemv("in 2, 8 warps, split 2", gemvKernel<2, 8, 2, 1>, 8, 2, 1);
    gemv("in 2, 8 warps, split 4", gemvKernel<2, 8, 4, 1>, 8, 4, 1);
    gemv("in 4, 4 warps, split 2", gemvKernel<4, 4, 2, 1>, 4, 2, 1);
    gemv("in 4, 16 warps, split 2", gemvKernel<4, 16, 2, 1>, 16, 2, 1);
    gemv("in 2, 16 warps, split 2", gemvKernel<2, 16, 2, 1>, 16, 2, 1);
    gemv("in 4, 16 warps, split 4", gemvKernel<4, 16, 4, 1>, 16, 4, 1);
    gemv("in 8, 8 warps, 2 rows (as shipped)", gemvKernel<8, 8, 1, 2>, 8, 1, 2);
    gemv("in 4, 8 warps, 2 rows", gemvKernel<4, 8, 1, 2>, 8, 1, 2);
    gemv("in 2, 8 warps, 2 rows", gemvKernel<2, 8, 1, 2>, 8, 1, 2);
    gemv("in 4, 8 warps, split 2, 2 rows", gemvKernel<4, 8, 2, 2>, 8, 2, 2);
    gemv("in 2, 8 warps, split 2, 2 rows", gemvKernel<2, 8, 2, 2>, 8, 2, 2);
    gemv("in 2, 4 warps, split 2, 2 rows", gemvKernel<2, 4, 2, 2>, 4, 2, 2);
  }
  return 0;
}
