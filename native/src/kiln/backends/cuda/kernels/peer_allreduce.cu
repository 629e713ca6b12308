// One-shot all-reduce between the GPUs of one machine over peer memory (NVLink), for the small sums of
// tensor-parallel decode (a few KB to 1 MB per call), where NCCL's per-call latency dominates. This is
// the "custom all-reduce" of TensorRT-LLM and vLLM, written for Kiln:
//   1. each block copies its slice of x into this rank's exchange buffer (peer-visible, cudaIpc);
//   2. it signals every rank's flag slot for (block, this rank) and waits until every rank has signalled
//      its own slot here (release/acquire at system scope);
//   3. it sums the slice of every rank's exchange buffer in rank order, in float32, into y.
// Every rank sums in the same order, so every rank gets the same bits. Flags count calls per block and
// live in device memory, so a replayed CUDA graph keeps counting. The exchange buffer alternates between
// two halves by the call's parity: a rank writes half h of call n + 2 only after every rank has signalled
// call n + 1, so no peer still reads half h of call n; hence no barrier at the end. A rank waits until a
// peer's flag is at least this call's count (a faster peer may already have signalled the next call).
// A wait that never ends (a peer gone) traps after about ten seconds rather than hanging.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kiln/backends/cuda/kernels/common.cuh"
#include "kiln/backends/cuda/kernels/kernels.h"

namespace kiln {
namespace cuda {

namespace {

constexpr int kThreads = 512;

__device__ __forceinline__ void storeRelease(uint32_t* p, uint32_t v) {
  asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ uint32_t loadAcquire(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ uint64_t nanoseconds() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
__device__ __forceinline__ uint4 loadVolatile(const uint4* p) {
  uint4 v;
  asm volatile("ld.volatile.global.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p) : "memory");
  return v;
}

// 16 bytes of T as floats (4 or 8), and back.
template <typename T>
struct Vec;
template <>
struct Vec<float> {
  static constexpr int N = 4;
  __device__ static void add(const uint4& v, float* acc) {
    const float* f = reinterpret_cast<const float*>(&v);
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[i] += f[i];
  }
  __device__ static uint4 pack(const float* acc) {
    uint4 v;
    float* f = reinterpret_cast<float*>(&v);
#pragma unroll
    for (int i = 0; i < 4; ++i) f[i] = acc[i];
    return v;
  }
};
template <>
struct Vec<__half> {
  static constexpr int N = 8;
  __device__ static void add(const uint4& v, float* acc) {
    const __half* h = reinterpret_cast<const __half*>(&v);
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[i] += __half2float(h[i]);
  }
  __device__ static uint4 pack(const float* acc) {
    uint4 v;
    __half* h = reinterpret_cast<__half*>(&v);
#pragma unroll
    for (int i = 0; i < 8; ++i) h[i] = __float2half_rn(acc[i]);
    return v;
  }
};
template <>
struct Vec<__nv_bfloat16> {
  static constexpr int N = 8;
  __device__ static void add(const uint4& v, float* acc) {
    const __nv_bfloat16* h = reinterpret_cast<const __nv_bfloat16*>(&v);
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[i] += __bfloat162float(h[i]);
  }
  __device__ static uint4 pack(const float* acc) {
    uint4 v;
    __nv_bfloat16* h = reinterpret_cast<__nv_bfloat16*>(&v);
#pragma unroll
    for (int i = 0; i < 8; ++i) h[i] = __float2bfloat16_rn(acc[i]);
    return v;
  }
};

template <typename T>
__global__ void __launch_bounds__(kThreads) oneShotAllReduce(PeerAllReduceRanks ranks, const uint4* x, uint4* y, int64_t vectors) {
  // x was written by the kernel before; every block starts before the next kernel may (see launch).
  startAfterPriorKernels();
  const int rank = ranks.rank;
  const int world = ranks.world;
  __shared__ uint32_t callShared;
  if (threadIdx.x == 0) callShared = ranks.counters[blockIdx.x] + 1;
  __syncthreads();
  const uint32_t call = callShared;
  const size_t half = static_cast<size_t>(call & 1u) * ranks.halfBytes;
  const int64_t step = static_cast<int64_t>(gridDim.x) * kThreads;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;

  uint4* mine = reinterpret_cast<uint4*>(ranks.buffers[rank] + half);
  for (int64_t i = first; i < vectors; i += step) mine[i] = x[i];
  __syncthreads();

  if (threadIdx.x < world) {
    const int peer = threadIdx.x;
    __threadfence_system();
    storeRelease(ranks.flags[peer] + blockIdx.x * kPeerAllReduceMaxRanks + rank, call);
    const uint32_t* slot = ranks.flags[rank] + blockIdx.x * kPeerAllReduceMaxRanks + peer;
    const uint64_t since = nanoseconds();
    while (static_cast<int32_t>(loadAcquire(slot) - call) < 0) {
      if (nanoseconds() - since > 10'000'000'000ull) __trap();  // a peer that never signals: fail, do not hang
    }
  }
  __syncthreads();

  constexpr int N = Vec<T>::N;
  for (int64_t i = first; i < vectors; i += step) {
    float acc[N];
#pragma unroll
    for (int k = 0; k < N; ++k) acc[k] = 0.0f;
    for (int r = 0; r < world; ++r) {
      Vec<T>::add(loadVolatile(reinterpret_cast<const uint4*>(ranks.buffers[r] + half) + i), acc);
    }
    y[i] = Vec<T>::pack(acc);
  }
  if (threadIdx.x == 0) ranks.counters[blockIdx.x] = call;
}

}  // namespace

void peerAllReduce(cudaStream_t stream, const PeerAllReduceRanks& ranks, const void* x, void* y, size_t bytes, DType dtype) {
  const int64_t vectors = static_cast<int64_t>(bytes / 16);
  if (vectors == 0) return;
  const unsigned blocks = blocksFor(vectors, kThreads, kPeerAllReduceMaxBlocks);
  const auto* in = static_cast<const uint4*>(x);
  auto* out = static_cast<uint4*>(y);
  switch (dtype) {
    case DType::F32: launch(oneShotAllReduce<float>, dim3(blocks), dim3(kThreads), 0, stream, ranks, in, out, vectors); break;
    case DType::F16: launch(oneShotAllReduce<__half>, dim3(blocks), dim3(kThreads), 0, stream, ranks, in, out, vectors); break;
    case DType::BF16: launch(oneShotAllReduce<__nv_bfloat16>, dim3(blocks), dim3(kThreads), 0, stream, ranks, in, out, vectors); break;
    default: throw std::runtime_error("peer all-reduce: float32, float16 or bfloat16 only");
  }
}

}  // namespace cuda
}  // namespace kiln
