#pragma once
// Element loads and stores of any activation dtype, block reductions and launch helpers shared by the
// .cu files.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "kiln/dtype.h"

namespace kiln {
namespace cuda {

// Element i of an array of type t, as float32 (the switch is uniform across a launch: no divergence).
__device__ __forceinline__ float load(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::F16: return __half2float(static_cast<const __half*>(p)[i]);
    case DType::BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}
// Stores v rounded to nearest even.
__device__ __forceinline__ void store(void* p, DType t, int64_t i, float v) {
  switch (t) {
    case DType::F16: static_cast<__half*>(p)[i] = __float2half_rn(v); return;
    case DType::BF16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v); return;
    default: static_cast<float*>(p)[i] = v; return;
  }
}

// v rounded to dtype t and back (what a store then a load would give).
__device__ __forceinline__ float roundTo(DType t, float v) {
  switch (t) {
    case DType::F16: return __half2float(__float2half_rn(v));
    case DType::BF16: return __bfloat162float(__float2bfloat16_rn(v));
    default: return v;
  }
}

__device__ __forceinline__ float toF(float x) { return x; }
__device__ __forceinline__ float toF(__half x) { return __half2float(x); }
__device__ __forceinline__ float toF(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T fromF(float x);
template <>
__device__ __forceinline__ float fromF<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half fromF<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 fromF<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// A 16-byte vector as float32: 8 elements of a 16-bit type, or 4 float32 (the pointer only picks the type).
__device__ __forceinline__ void vectorToFloats(const uint4& v, const float*, float* f) {
  f[0] = __uint_as_float(v.x);
  f[1] = __uint_as_float(v.y);
  f[2] = __uint_as_float(v.z);
  f[3] = __uint_as_float(v.w);
}
__device__ __forceinline__ void vectorToFloats(const uint4& v, const __nv_bfloat16*, float* f) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 p = __bfloat1622float2(h[i]);
    f[2 * i] = p.x;
    f[2 * i + 1] = p.y;
  }
}
__device__ __forceinline__ void vectorToFloats(const uint4& v, const __half*, float* f) {
  const __half2* h = reinterpret_cast<const __half2*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 p = __half22float2(h[i]);
    f[2 * i] = p.x;
    f[2 * i + 1] = p.y;
  }
}

__device__ __forceinline__ float warpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warpMax(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum / max over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `shared` holds 32 floats. Starts and ends with a barrier, so it may be called in a loop.
__device__ __forceinline__ float blockSum(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warpSum(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float r = lane < warps ? shared[lane] : 0.0f;
  return warpSum(r);
}
__device__ __forceinline__ float blockMax(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warpMax(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float r = lane < warps ? shared[lane] : -INFINITY;
  return warpMax(r);
}

// A 16-byte load of weights that are read once per kernel: it bypasses L1 so that they do not evict the
// activations the GEMVs reuse (gemv.cu, gemv_int8.cu, gemv_int4.cu, fp8.cu).
__device__ __forceinline__ uint4 loadStreaming(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// Blocks for n items of `threads`, capped so that grid-stride loops cover the rest.
inline unsigned blocksFor(int64_t n, int threads, int64_t cap = 65536) {
  int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > cap ? cap : b));
}

// Programmatic dependent launch (Hopper; TensorRT-LLM's "PDL"). Every Kiln kernel is launched through
// `launch`, which lets it start while the kernel before it on the stream is still finishing: its blocks
// are scheduled as soon as every block of the previous kernel has called allowNextKernel() (or exited).
// In exchange each kernel must call waitForPriorKernels() before it reads anything an earlier kernel
// wrote or writes anything an earlier kernel reads; that wait returns once the previous grid has
// completed and its memory is visible. What a kernel does before the wait overlaps its predecessor: the
// GEMV loads its first weights there, which depend on nothing. KILN_CUDA_PDL=0 launches normally (then
// both calls are no-ops). cuBLASLt's kernels are launched without it and so wait as usual.
__device__ __forceinline__ void waitForPriorKernels() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void allowNextKernel() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
// Both at once, at the top of a kernel whose every read may depend on its predecessor.
__device__ __forceinline__ void startAfterPriorKernels() {
  waitForPriorKernels();
  allowNextKernel();
}

bool pdlEnabled();  // kernels.cu: false when KILN_CUDA_PDL=0

template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t sharedBytes, cudaStream_t stream,
            Args&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = sharedBytes;
  config.stream = stream;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = pdlEnabled() ? 1 : 0;
  config.attrs = attribute;
  config.numAttrs = 1;
  const cudaError_t status = cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
  if (status != cudaSuccess) throw std::runtime_error(std::string("cuda kernel launch: ") + cudaGetErrorString(status));
}

// Calls f(T{}) with T the element type of dtype t (for kernels templated on the KV cache's type).
template <typename F>
void dispatch(DType t, F&& f) {
  switch (t) {
    case DType::F32: f(float{}); return;
    case DType::F16: f(__half{}); return;
    case DType::BF16: f(__nv_bfloat16{}); return;
    default: throw std::runtime_error("cuda kernels: the KV cache must be float32, float16 or bfloat16");
  }
}

}  // namespace cuda
}  // namespace kiln
