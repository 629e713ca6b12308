#pragma once
// Kiln's CUDA kernels (launchers; the kernels are in the .cu files beside this). Activations and the KV
// cache are of the engine's activation dtype `t` (float32, float16 or bfloat16), weights of that same
// dtype unless said otherwise (biases, rotary frequencies and ALiBi slopes are float32); everything
// accumulates in float32. Matrices are row-major with row strides in elements. Each launcher only
// enqueues work on `stream`; semantics are those of the CPU kernels (kiln/backends/cpu/kernels/kernels.h), which the
// GPU suite (test/cuda) compares them with.
#include <cuda_runtime.h>

#include <cstdint>

#include "kiln/backends/cuda/device_step.h"
#include "kiln/dtype.h"

namespace kiln {
namespace cuda {

void embedding(cudaStream_t stream, DType t, const int32_t* ids, int64_t numTokens, const void* table, int64_t hidden,
               float scale, void* out, int64_t outStride);
// out[t] = table[positions[t] + offset]; positions are checked on the host first.
void positionEmbedding(cudaStream_t stream, DType t, const int32_t* positions, int64_t numTokens, int64_t offset,
                       const void* table, int64_t hidden, void* out, int64_t outStride);

void rmsNorm(cudaStream_t stream, DType t, const void* x, int64_t rows, int64_t xStride, const void* w,
             int64_t numGroups, int64_t groupSize, float eps, float weightOffset, void* y, int64_t yStride);
void layerNorm(cudaStream_t stream, DType t, const void* x, int64_t rows, int64_t xStride, const void* w,
               const float* bias, int64_t H, float eps, void* y, int64_t yStride);

enum class Elementwise : int { Add, Mul, Silu, Swiglu, Gelu, GeluTanh, Geglu, GegluTanh, Relu, Softcap };
// out = f(a[, b]) over [rows, cols]; `param` is the softcap's cap. out may alias a or b.
void elementwise(cudaStream_t stream, DType t, Elementwise op, const void* a, int64_t aStride, const void* b,
                 int64_t bStride, int64_t rows, int64_t cols, float param, void* out, int64_t outStride);
// y[r, n] += bias[n] (float32 bias).
void addBias(cudaStream_t stream, DType t, void* y, int64_t rows, int64_t yStride, const float* bias, int64_t N);

void rope(cudaStream_t stream, DType t, const void* x, int64_t numTokens, int64_t xStride, const int32_t* positions,
          int64_t numHeads, int64_t headDim, int64_t rotaryDim, bool interleaved, const float* invFreq,
          float attentionScaling, void* y, int64_t yStride);

// Stores the step's K and V rows into layer `layer` of the cache, then attends (attentionKernel's
// semantics: causal, sliding window, softcap, ALiBi, GQA/MQA) for every token and query head.
void attention(cudaStream_t stream, DType t, const DeviceStep& step, const DeviceKv& kv, int32_t layer, const void* q,
               int64_t qStride, const void* k, int64_t kStride, const void* v, int64_t vStride, int64_t numHeads,
               int64_t numKvHeads, int64_t headDim, float scale, int64_t slidingWindow, float softcap,
               const float* alibiSlopes, void* out, int64_t outStride);

void gatherRows(cudaStream_t stream, DType t, const void* x, int64_t xStride, const int32_t* rows, int64_t numRows,
                int64_t cols, void* out, int64_t outStride);
// out[r, c] = float(x[r, c]) for r < rows, c < cols; out's stride is cols.
void toFloat32(cudaStream_t stream, DType t, const void* x, int64_t rows, int64_t xStride, int64_t cols, float* out);

// MoE routing: for each token, softmax(x . router^T) over E experts in float32, topK kept (ties to the
// lower index), optionally renormalised; weights[t, e] is the kept probability, 0 for the others.
void moeRoute(cudaStream_t stream, DType t, const void* x, int64_t T, int64_t xStride, const void* router,
              int64_t numExperts, int64_t hidden, int64_t topK, bool normalizeTopK, float* weights);
// acc[t, :] += weights[t, expert] * d[t, :] where that weight is not 0 (acc float32 [T, H]).
void moeAccumulate(cudaStream_t stream, DType t, const void* d, int64_t T, int64_t H, const float* weights,
                   int64_t numExperts, int64_t expert, float* acc);
// out[t, :] = acc[t, :] converted to t.
void fromFloat32(cudaStream_t stream, DType t, const float* acc, int64_t rows, int64_t cols, void* out,
                 int64_t outStride);

}  // namespace cuda
}  // namespace kiln
