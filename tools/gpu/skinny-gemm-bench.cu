// A micro-benchmark for the GEMMs of batched decode (M = 16 to 64 token rows), where cuBLASLt's tiles leave
// most of the bandwidth unused. At concurrency 64, a 1.1B-shaped model's 64-sequence step spends about 1.3
// of its 1.73 ms in these GEMMs, where their bytes need about 0.5 ms (docs/benchmarks.md, session 11).
// Build and run it alone on the GPU machine:
//
//   nvcc -O3 -std=c++17 -arch=sm_90 -lcublas -o /tmp/skinny tools/gpu/skinny-gemm-bench.cu && /tmp/skinny
//
// The design under test streams the weights once, as the decode GEMV does, and multiplies on tensor cores
// with mma.sync and float32 accumulators: bfloat16 (m16n8k16) and e4m3 (m16n8k32, for the FP8 mode's
// concurrency target). A block of 4 warps takes 64 output features and a split of K. Each warp takes 16 of
// those features (two n-tiles of 8) for every m-tile of X.
//   - W, the B operand, is read straight from global memory with 16-byte loads, one chunk ahead. Each
//     lane's 16 bytes serve two k-steps as their fragments, under a permutation of k inside a 64-byte
//     slice (see skinnyGemm). The A fragments use the same permutation, which leaves each dot product
//     unchanged.
//   - X, the A operand (at most 64 rows), is staged in shared memory 256 bytes of a row at a time with
//     cp.async, two stages. A lane reads its rows' 16 bytes with one load. The 320-byte row pitch keeps
//     those reads free of bank conflicts.
//   - Split-K adds the splits' partial sums into a zeroed float32 Y with atomicAdd.
// Each variant's Y is checked, on the same inputs, against cuBLAS with float32 out for bfloat16 and
// against a plain float32 kernel for e4m3. Times come from CUDA graphs of 32 launches, each on another
// slice of a 1.5 GB pool, as gemv-bench.cu times them. They are set against cuBLAS with bfloat16 out
// (Kiln's path) and against the HBM time of the weights.
//
// Written in session 11 without a GPU to run it on. The fragment index maths was checked by a NumPy
// emulation of both mma shapes (exact for e4m3-range integers, 5e-7 relative for floats). The first run
// on a GPU checks the rest.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
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
#define CHECK_CUBLAS(x)                                                                   \
  do {                                                                                    \
    cublasStatus_t s = (x);                                                               \
    if (s != CUBLAS_STATUS_SUCCESS) {                                                     \
      std::fprintf(stderr, "%s:%d %s: cublas status %d\n", __FILE__, __LINE__, #x, static_cast<int>(s)); \
      std::exit(1);                                                                       \
    }                                                                                     \
  } while (0)

namespace {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kFeatures = 16 * kWarps;  // per block
// Everything below counts bytes, so one kernel serves bfloat16 (k16 mma, 8 elements a 16-byte load) and
// e4m3 (k32 mma, 16 elements a load): a lane's 16 bytes of a row are two k-steps' fragments either way.
constexpr int kSliceBytes = 64;              // 4 lanes x 16 bytes of a row: one slice, two mma k-steps
constexpr int kChunkBytes = 256;             // k per stage, in bytes of a row
constexpr int kPitchBytes = kChunkBytes + 64;  // shared row pitch: conflict-free 16-byte reads
constexpr int kSlices = kChunkBytes / kSliceBytes;

__device__ __forceinline__ uint4 loadStreaming(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

__device__ __forceinline__ void cpAsync16(void* shared, const void* global) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(shared));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(global) : "memory");
}
__device__ __forceinline__ void cpAsyncCommit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cpAsyncWait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }

// One mma k-step: bfloat16 m16n8k16, or e4m3 m16n8k32 (the same registers: 2 or 4 elements in each).
struct Bf16 {
  static constexpr int kBytes = 2;
  __device__ __forceinline__ static void mma(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
};
struct E4m3 {
  static constexpr int kBytes = 1;
  __device__ __forceinline__ static void mma(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
};

// Y[M, N] (+)= X[M, K] W[N, K]^T (float32 sums of the elements' products) over this block's split of K;
// M <= 16 * MT, K * bytes a multiple of kChunkBytes, each split whole chunks. With splits (gridDim.y > 1)
// Y is zeroed before and the splits are added with atomicAdd.
//
// The k permutation (bfloat16; e4m3 doubles every k): lane (g, t) holds bytes 16t .. 16t + 15 of a row's
// 64-byte slice in registers r0..r3. k-step 0 takes r0, r1 and step 1 takes r2, r3, as the fragments'
// "k 2t + e" and "k 2t + 8 + e" (bfloat16), or "k 4t + e" and "k 4t + 16 + e" (e4m3). A and B follow the
// same map, so every product is a true x[m, k] w[n, k], and each k of the slice is taken once.
template <typename T, int MT>
__global__ void __launch_bounds__(kThreads) skinnyGemm(const uint8_t* __restrict__ X, int M, const uint8_t* __restrict__ W,
                                                        int N, int K, int chunksPerSplit, float* __restrict__ Y) {
  __shared__ __align__(16) uint8_t xs[2][MT * 16][kPitchBytes];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int64_t rowBytes = static_cast<int64_t>(K) * T::kBytes;
  const int nBase = blockIdx.x * kFeatures + warp * 16;
  const int chunks = static_cast<int>(rowBytes / kChunkBytes);
  const int c0 = blockIdx.y * chunksPerSplit;
  const int c1 = min(chunks, c0 + chunksPerSplit);
  if (c0 >= c1) return;
  // This lane's two weight rows (one per n-tile); rows past N read row 0 and are never stored.
  const uint8_t* wRow[2];
#pragma unroll
  for (int nt = 0; nt < 2; ++nt) {
    const int n = nBase + nt * 8 + g;
    wRow[nt] = W + static_cast<int64_t>(n < N ? n : 0) * rowBytes + 16 * t;
  }
  auto loadW = [&](int c, uint4 (&to)[2][kSlices]) {
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
      for (int s = 0; s < kSlices; ++s) to[nt][s] = loadStreaming(wRow[nt] + c * kChunkBytes + s * kSliceBytes);
  };
  // X chunk c into stage `stage`: MT * 16 rows of kChunkBytes, 16 bytes a copy; rows past M are zero.
  auto stageX = [&](int c, int stage) {
    constexpr int kCopies = MT * 16 * (kChunkBytes / 16);
    for (int i = threadIdx.x; i < kCopies; i += kThreads) {
      const int row = i / (kChunkBytes / 16), col = (i % (kChunkBytes / 16)) * 16;
      if (row < M) {
        cpAsync16(&xs[stage][row][col], X + row * rowBytes + c * kChunkBytes + col);
      } else {
        *reinterpret_cast<uint4*>(&xs[stage][row][col]) = make_uint4(0, 0, 0, 0);
      }
    }
    cpAsyncCommit();
  };
  float acc[MT][2][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.0f;
  uint4 wCur[2][kSlices], wNext[2][kSlices];
  loadW(c0, wCur);
  stageX(c0, 0);
  for (int c = c0; c < c1; ++c) {
    const int stage = (c - c0) & 1;
    if (c + 1 < c1) {
      stageX(c + 1, stage ^ 1);
      loadW(c + 1, wNext);
      cpAsyncWait<1>();
    } else {
      cpAsyncWait<0>();
    }
    __syncthreads();
#pragma unroll
    for (int s = 0; s < kSlices; ++s) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const uint4 lo = *reinterpret_cast<const uint4*>(&xs[stage][mt * 16 + g][s * kSliceBytes + 16 * t]);
        const uint4 hi = *reinterpret_cast<const uint4*>(&xs[stage][mt * 16 + 8 + g][s * kSliceBytes + 16 * t]);
#pragma unroll
        for (int nt = 0; nt < 2; ++nt) {
          const uint4 w = wCur[nt][s];
          T::mma(acc[mt][nt], lo.x, hi.x, lo.y, hi.y, w.x, w.y);  // k-step 0: bytes 16t + 0..7
          T::mma(acc[mt][nt], lo.z, hi.z, lo.w, hi.w, w.z, w.w);  // k-step 1: bytes 16t + 8..15
        }
      }
    }
    __syncthreads();  // the next iteration's copies overwrite the stage read here
    if (c + 1 < c1) {
#pragma unroll
      for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int s = 0; s < kSlices; ++s) wCur[nt][s] = wNext[nt][s];
    }
  }
  const bool split = gridDim.y > 1;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int m = mt * 16 + g + (i >= 2 ? 8 : 0);
        const int n = nBase + nt * 8 + 2 * t + (i & 1);
        if (m >= M || n >= N) continue;
        float* out = Y + static_cast<int64_t>(m) * N + n;
        if (split) {
          atomicAdd(out, acc[mt][nt][i]);
        } else {
          *out = acc[mt][nt][i];
        }
      }
}

// The e4m3 reference: y[m, n] = sum_k float(x[m, k]) float(w[n, k]), one thread an output, in float32.
__device__ float e4m3ToFloat(uint8_t c) {
  const __half_raw h = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(c), __NV_E4M3);
  return __half2float(__half(h));
}
__global__ void referenceE4m3(const uint8_t* X, int M, const uint8_t* W, int N, int K, float* Y) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= static_cast<int64_t>(M) * N) return;
  const int m = static_cast<int>(i / N), n = static_cast<int>(i % N);
  float s = 0.0f;
  for (int k = 0; k < K; ++k) s = fmaf(e4m3ToFloat(X[static_cast<int64_t>(m) * K + k]), e4m3ToFloat(W[static_cast<int64_t>(n) * K + k]), s);
  Y[i] = s;
}

struct Shape {
  const char* name;
  int N, K;
};

// Random bfloat16 in [-1, 1), or random e4m3 codes (no NaN: 0x7f and 0xff become 0x7e and 0xfe), from a
// hash of the index (no host copy of 1.5 GB).
__device__ __forceinline__ uint32_t hashOf(int64_t i, uint32_t seed) {
  uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed;
  h ^= h >> 15;
  h *= 2246822519u;
  h ^= h >> 13;
  return h;
}
__global__ void fillBf16(__nv_bfloat16* p, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    p[i] = __float2bfloat16(static_cast<float>(hashOf(i, seed) & 0xffff) / 32768.0f - 1.0f);
  }
}
__global__ void fillE4m3(uint8_t* p, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint8_t c = static_cast<uint8_t>(hashOf(i, seed) >> 7);
    p[i] = (c & 0x7f) == 0x7f ? static_cast<uint8_t>(c - 1) : c;
  }
}

}  // namespace

int main() {
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const size_t poolBytes = size_t{1536} << 20;
  uint8_t* pool = nullptr;
  CHECK(cudaMalloc(&pool, poolBytes));
  const int64_t maxK = 5632, maxN = 32000, maxM = 64;
  uint8_t* x = nullptr;
  float* y = nullptr;
  float* yRef = nullptr;
  __nv_bfloat16* yBf16 = nullptr;
  CHECK(cudaMalloc(&x, maxM * maxK * 2));
  CHECK(cudaMalloc(&y, maxM * maxN * 4));
  CHECK(cudaMalloc(&yRef, maxM * maxN * 4));
  CHECK(cudaMalloc(&yBf16, maxM * maxN * 2));
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cublasHandle_t blas;
  CHECK_CUBLAS(cublasCreate(&blas));
  CHECK_CUBLAS(cublasSetStream(blas, stream));
  cudaEvent_t t0, t1;
  CHECK(cudaEventCreate(&t0));
  CHECK(cudaEventCreate(&t1));
  float copyBw = 0.0f;  // device-to-device copy, bytes per second: the bound
  {
    const size_t half = poolBytes / 2;
    CHECK(cudaMemcpyAsync(pool + half, pool, half, cudaMemcpyDeviceToDevice, stream));
    CHECK(cudaEventRecord(t0, stream));
    for (int r = 0; r < 5; ++r) CHECK(cudaMemcpyAsync(pool + half, pool, half, cudaMemcpyDeviceToDevice, stream));
    CHECK(cudaEventRecord(t1, stream));
    CHECK(cudaEventSynchronize(t1));
    float ms = 0.0f;
    CHECK(cudaEventElapsedTime(&ms, t0, t1));
    copyBw = static_cast<float>(2.0 * half * 5 / (ms / 1e3));
  }

  const std::vector<Shape> shapes = {{"qkv 2560x2048", 2560, 2048}, {"o 2048x2048", 2048, 2048}, {"gate/up 11264x2048", 11264, 2048},
                                     {"down 2048x5632", 2048, 5632}, {"lm head 32000x2048", 32000, 2048}};
  constexpr int kLaunches = 32, kReplays = 10;
  // Microseconds per launch of a graph of kLaunches launches of `launch(w)`, w another slice each time.
  auto timeGraph = [&](size_t bytes, auto&& launch) {
    const size_t sliceBytes = (bytes + 4095) / 4096 * 4096;
    const size_t slices = poolBytes / sliceBytes;
    cudaGraph_t graph;
    CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    for (int l = 0; l < kLaunches; ++l) launch(pool + (l % slices) * sliceBytes);
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
  const float one = 1.0f, zero = 0.0f;
  // bfloat16 row-major X[M, K] and W[N, K] into row-major Y[M, N]: column-major Y^T = W^T^T X^T.
  auto cublasBf16 = [&](const uint8_t* w, int M, int N, int K, void* out, cudaDataType outType) {
    CHECK_CUBLAS(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, w, CUDA_R_16BF, K, x, CUDA_R_16BF, K, &zero, out,
                              outType, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  };
  auto skinny = [&](auto type, const uint8_t* w, int M, int N, int K, int splits) {
    using T = decltype(type);
    const int chunks = static_cast<int>(static_cast<int64_t>(K) * T::kBytes / kChunkBytes);
    const int per = (chunks + splits - 1) / splits;
    const dim3 grid((N + kFeatures - 1) / kFeatures, (chunks + per - 1) / per);
    if (grid.y > 1) CHECK(cudaMemsetAsync(y, 0, static_cast<size_t>(M) * N * 4, stream));
    if (M <= 16) skinnyGemm<T, 1><<<grid, kThreads, 0, stream>>>(x, M, w, N, K, per, y);
    else if (M <= 32) skinnyGemm<T, 2><<<grid, kThreads, 0, stream>>>(x, M, w, N, K, per, y);
    else skinnyGemm<T, 4><<<grid, kThreads, 0, stream>>>(x, M, w, N, K, per, y);
    CHECK(cudaGetLastError());
  };

  std::printf("skinny-gemm-bench: %d SMs, copy %.0f GB/s; us per launch (weight TB/s), %d launches a graph\n", sms, copyBw / 1e9, kLaunches);
  int failures = 0;
  // Correctness on the pool's first slice against `reference` (which fills yRef), then the time.
  auto variants = [&](auto type, const char* typeName, int M, const Shape& s, size_t bytes, double tolerance, auto&& reference) {
    const int blocks = (s.N + kFeatures - 1) / kFeatures;
    // Without split-K, and with enough splits that the grid covers the SMs about twice.
    for (int splits : {1, std::max(1, (2 * sms + blocks - 1) / blocks)}) {
      reference();
      skinny(type, pool, M, s.N, s.K, splits);
      CHECK(cudaStreamSynchronize(stream));
      std::vector<float> a(static_cast<size_t>(M) * s.N), b(a.size());
      CHECK(cudaMemcpy(a.data(), y, a.size() * 4, cudaMemcpyDeviceToHost));
      CHECK(cudaMemcpy(b.data(), yRef, b.size() * 4, cudaMemcpyDeviceToHost));
      double worst = 0.0, scale = 0.0;
      for (size_t i = 0; i < a.size(); ++i) scale = std::max(scale, static_cast<double>(std::fabs(b[i])));
      for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - b[i]) / (scale + 1e-30));
      const bool ok = worst <= tolerance;
      failures += ok ? 0 : 1;
      const double us = timeGraph(bytes, [&](const uint8_t* w) { skinny(type, w, M, s.N, s.K, splits); });
      std::printf(" | %s split %d: %7.2f us (%4.2f TB/s) err %.1e%s", typeName, splits, us, bytes / us / 1e6, worst, ok ? "" : " WRONG");
    }
  };

  // bfloat16, against cuBLAS (float32 out for the check, bfloat16 out for the time, as Kiln's linears).
  fillBf16<<<4096, 256, 0, stream>>>(reinterpret_cast<__nv_bfloat16*>(pool), static_cast<int64_t>(poolBytes / 2), 1u);
  fillBf16<<<256, 256, 0, stream>>>(reinterpret_cast<__nv_bfloat16*>(x), maxM * maxK, 7u);
  for (int M : {16, 32, 64}) {
    for (const Shape& s : shapes) {
      const size_t bytes = static_cast<size_t>(s.N) * s.K * 2;
      const double blasUs = timeGraph(bytes, [&](const uint8_t* w) { cublasBf16(w, M, s.N, s.K, yBf16, CUDA_R_16BF); });
      std::printf("bf16 M=%-2d %-20s bound %7.2f us | cuBLAS %7.2f us (%4.2f TB/s)", M, s.name, bytes / copyBw * 1e6, blasUs, bytes / blasUs / 1e6);
      variants(Bf16{}, "skinny", M, s, bytes, 1e-4, [&] { cublasBf16(pool, M, s.N, s.K, yRef, CUDA_R_32F); });
      std::printf("\n");
    }
  }
  // e4m3 codes (Kiln's FP8 linears: per-row activation scales and a per-tensor weight scale, applied
  // after the sums, are left out), against a plain float32 kernel.
  fillE4m3<<<4096, 256, 0, stream>>>(pool, static_cast<int64_t>(poolBytes), 3u);
  fillE4m3<<<256, 256, 0, stream>>>(x, maxM * maxK, 9u);
  for (int M : {16, 32, 64}) {
    for (const Shape& s : shapes) {
      const size_t bytes = static_cast<size_t>(s.N) * s.K;
      std::printf("e4m3 M=%-2d %-20s bound %7.2f us", M, s.name, bytes / copyBw * 1e6);
      variants(E4m3{}, "skinny", M, s, bytes, 1e-3, [&] {
        const int64_t outputs = static_cast<int64_t>(M) * s.N;
        referenceE4m3<<<static_cast<unsigned>((outputs + 255) / 256), 256, 0, stream>>>(x, M, pool, s.N, s.K, yRef);
        CHECK(cudaGetLastError());
      });
      std::printf("\n");
    }
  }
  std::printf("%s\n", failures == 0 ? "every variant agrees with its reference" : "SOME VARIANTS DISAGREE WITH THEIR REFERENCE");
  return failures == 0 ? 0 : 1;
}
