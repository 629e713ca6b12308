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
#include <algorithm>
#include <cmath>
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
__device__ __forceinline__ void prefetchL2(const void* p, uint32_t bytes) {
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
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
template <int kIn, int kWarps, int kSplit, int kRows, bool kPrefetch = false>
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
  if constexpr (kPrefetch) {
    // The warp's whole share of each row asked of L2 at once (one bulk prefetch a row), so that the
    // register-bound loads below find it in L2 rather than wait on DRAM.
#pragma unroll
    for (int j = 0; j < kRows; ++j)
      if (lane == j && hi[j] > lo) prefetchL2(row[j] + lo, static_cast<uint32_t>((hi[j] - lo) * 16));
  }
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


// The weights through shared memory: a persistent grid (a block an SM), each block taking tiles of kF
// consecutive rows (contiguous bytes) in turn, the copy engine (cp.async.bulk, completing on an mbarrier)
// filling a ring of `stages` tiles. The first stages are requested before the wait, so up to the ring's
// bytes are in flight per SM without a register held for them; 8 warps then read each tile from shared
// memory (warp w: row w % kF, part w / kF of K) against x in shared memory.
__device__ __forceinline__ uint32_t smemAddr(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void mbarInit(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smemAddr(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbarExpect(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smemAddr(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbarWait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n .reg .pred p;\n WAIT_%=:\n mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n @!p bra WAIT_%=;\n}\n" ::"r"(smemAddr(bar)),
      "r"(parity)
      : "memory");
}
__device__ __forceinline__ void bulkCopy(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(smemAddr(dst)), "l"(src),
               "r"(bytes), "r"(smemAddr(bar))
               : "memory");
}

template <int kF>
__global__ void __launch_bounds__(256, 1) gemvTmaKernel(const __nv_bfloat16* x, const __nv_bfloat16* w, int64_t N, int64_t K, float* y, int stages) {
  constexpr int kWarps = 8, kParts = kWarps / kF;
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ __align__(8) uint64_t full[16];
  __shared__ float partial[2][kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t tiles = (N + kF - 1) / kF;
  const int64_t tileBytes = static_cast<int64_t>(kF) * K * 2;
  uint4* ring = reinterpret_cast<uint4*>(smem);
  uint4* xs = reinterpret_cast<uint4*>(smem + stages * tileBytes);
  auto issue = [&](int64_t tile, int s) {
    const int64_t rows = min(static_cast<int64_t>(kF), N - tile * kF);
    const uint32_t bytes = static_cast<uint32_t>(rows * K * 2);
    mbarExpect(&full[s], bytes);
    bulkCopy(reinterpret_cast<unsigned char*>(ring) + s * tileBytes, w + tile * kF * K, bytes, &full[s]);
  };
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; ++s) mbarInit(&full[s], 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    for (int s = 0; s < stages; ++s) {
      const int64_t tile = blockIdx.x + static_cast<int64_t>(s) * gridDim.x;
      if (tile < tiles) issue(tile, s);
    }
  }
  waitPrior();
  allowNext();
  const int64_t vectors = K / 8;
  for (int64_t i = threadIdx.x; i < vectors; i += blockDim.x) xs[i] = reinterpret_cast<const uint4*>(x)[i];
  __syncthreads();
  const int r = warp % kF, part = warp / kF;
  const int64_t per = (vectors + kParts - 1) / kParts, lo = part * per, hi = min(vectors, lo + per);
  int iteration = 0;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x, ++iteration) {
    const int s = iteration % stages;
    mbarWait(&full[s], (iteration / stages) & 1);
    const int64_t rows = min(static_cast<int64_t>(kF), N - tile * kF);
    float acc = 0.0f;
    if (r < rows) {
      const uint4* wr = reinterpret_cast<const uint4*>(reinterpret_cast<unsigned char*>(ring) + s * tileBytes) + r * vectors;
      for (int64_t i = lo + lane; i < hi; i += 32) acc = dot8(wr[i], xs[i], acc);
    }
    acc = warpSum(acc);
    if (lane == 0) partial[iteration & 1][warp] = acc;
    __syncthreads();  // every warp is done with stage s, and the partials are in
    if (threadIdx.x == 0) {
      const int64_t next = tile + static_cast<int64_t>(stages) * gridDim.x;
      if (next < tiles) issue(next, s);
    }
    if (threadIdx.x < rows) {
      float sum = 0.0f;
#pragma unroll
      for (int p = 0; p < kParts; ++p) sum += partial[iteration & 1][threadIdx.x + p * kF];
      y[tile * kF + threadIdx.x] = sum;
    }
  }
}

__global__ void fillPattern(__nv_bfloat16* p, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 13;
    h *= 0x5bd1e995u;
    h ^= h >> 15;
    p[i] = __float2bfloat16(static_cast<float>(h & 0xffff) / 65536.0f - 0.5f);
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
  auto pdlLaunchShared = [&](auto kernel, dim3 grid, dim3 block, size_t shared, auto... args) {
    cudaLaunchConfig_t config{};
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = shared;
    config.stream = stream;
    cudaLaunchAttribute attribute[1];
    attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute[0].val.programmaticStreamSerializationAllowed = 1;
    config.attrs = attribute;
    config.numAttrs = 1;
    CHECK(cudaLaunchKernelEx(&config, kernel, args...));
  };
  auto pdlLaunch = [&](auto kernel, dim3 grid, dim3 block, auto... args) { pdlLaunchShared(kernel, grid, block, 0, args...); };

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
    gemv("in 2, 8 warps, split 2, L2 prefetch", gemvKernel<2, 8, 2, 1, true>, 8, 2, 1);
    gemv("in 2, 16 warps, split 2, L2 prefetch", gemvKernel<2, 16, 2, 1, true>, 16, 2, 1);
    gemv("in 2, 8 warps, 2 rows, L2 prefetch", gemvKernel<2, 8, 1, 2, true>, 8, 1, 2);
    const auto tmaGemv = [&](const char* label, auto kernel, int F, int blocksPerSm) {
      const int64_t tileBytes = static_cast<int64_t>(F) * s.K * 2;
      const int64_t budget = (blocksPerSm == 1 ? 200 : 96) * 1024 - s.K * 2;
      const int stages = static_cast<int>(std::min<int64_t>(16, budget / tileBytes));
      if (stages < 2) return;
      const size_t shared = static_cast<size_t>(stages * tileBytes + s.K * 2);
      CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared)));
      char full[96];
      std::snprintf(full, sizeof full, "%s, %d stages of %lld KB, %d/SM", label, stages, static_cast<long long>(tileBytes / 1024), blocksPerSm);
      report(full, timeGraph(bytes, [&](const char* w) {
               pdlLaunchShared(kernel, dim3(static_cast<unsigned>(sms * blocksPerSm)), dim3(256), shared, static_cast<const __nv_bfloat16*>(x),
                               reinterpret_cast<const __nv_bfloat16*>(w), s.N, s.K, y, stages);
             }));
    };
    {
      // The shared-memory GEMV against the plain one on patterned weights and x (a wrong stage or row
      // would change the sums; the timing pool's uniform bytes would not show it).
      fillPattern<<<1024, 256, 0, stream>>>(static_cast<__nv_bfloat16*>(pool), s.N * s.K, 1u);
      fillPattern<<<64, 256, 0, stream>>>(x, s.K, 7u);
      float* yRef = nullptr;
      CHECK(cudaMalloc(&yRef, s.N * 4));
      gemvKernel<2, 8, 2, 1><<<static_cast<unsigned>((s.N + 3) / 4), 256, 0, stream>>>(x, static_cast<const __nv_bfloat16*>(pool), s.N, s.K, yRef);
      const int64_t tileBytes = 4 * s.K * 2;
      const int stages = static_cast<int>(std::min<int64_t>(16, (200 * 1024 - s.K * 2) / tileBytes));
      const size_t shared = static_cast<size_t>(stages * tileBytes + s.K * 2);
      CHECK(cudaFuncSetAttribute(gemvTmaKernel<4>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared)));
      gemvTmaKernel<4><<<sms, 256, shared, stream>>>(x, static_cast<const __nv_bfloat16*>(pool), s.N, s.K, y, stages);
      CHECK(cudaStreamSynchronize(stream));
      std::vector<float> a(s.N), b(s.N);
      CHECK(cudaMemcpy(a.data(), yRef, s.N * 4, cudaMemcpyDeviceToHost));
      CHECK(cudaMemcpy(b.data(), y, s.N * 4, cudaMemcpyDeviceToHost));
      double worst = 0.0;
      for (int64_t n = 0; n < s.N; ++n) worst = std::max(worst, static_cast<double>(std::fabs(a[n] - b[n])) / (std::fabs(a[n]) + 1e-3));
      std::printf("%-20s tma smem against plain: worst relative difference %.2e (%s)\n", s.name, worst, worst < 1e-3 ? "ok" : "WRONG");
      CHECK(cudaFree(yRef));
      CHECK(cudaMemset(pool, 0x3c, poolBytes));
      CHECK(cudaMemset(x, 0x3c, 65536 * 2));
    }
    tmaGemv("tma smem, 1 row a tile", gemvTmaKernel<1>, 1, 1);
    tmaGemv("tma smem, 2 rows a tile", gemvTmaKernel<2>, 2, 1);
    tmaGemv("tma smem, 4 rows a tile", gemvTmaKernel<4>, 4, 1);
    tmaGemv("tma smem, 8 rows a tile", gemvTmaKernel<8>, 8, 1);
    tmaGemv("tma smem, 2 rows a tile", gemvTmaKernel<2>, 2, 2);
    tmaGemv("tma smem, 4 rows a tile", gemvTmaKernel<4>, 4, 2);
  }
  return 0;
}
