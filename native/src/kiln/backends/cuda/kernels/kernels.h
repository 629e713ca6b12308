#pragma once
// Kiln's CUDA kernels (launchers; the kernels are in the .cu files beside this). Every activation carries
// its own element type (a cuda engine stores GEMM operands in 16 bits and the rest in float32: see
// docs/decisions/0007), read and written through load/store in common.cuh; weights are of any of
// float32, float16 and bfloat16 (biases, rotary frequencies and ALiBi slopes are float32); the KV cache
// is of the engine's activation dtype; everything accumulates in float32. Matrices are row-major with
// row strides in elements. Each launcher only enqueues work on `stream`. Semantics are those of the CPU
// kernels (kiln/backends/cpu/kernels/kernels.h), which the GPU suite (test/cuda) compares them with.
#include <cuda_runtime.h>

#include <cstdint>

#include "kiln/backends/cuda/device_step.h"
#include "kiln/dtype.h"

namespace kiln {
namespace cuda {

// A matrix in device memory: element (r, c) at data + (r * stride + c) elements of `dtype`.
struct Matrix {
  void* data;
  DType dtype;
  int64_t stride;
};
struct ConstMatrix {
  const void* data;
  DType dtype;
  int64_t stride;
  ConstMatrix(const void* d, DType t, int64_t s) : data(d), dtype(t), stride(s) {}
  ConstMatrix(const Matrix& m) : data(m.data), dtype(m.dtype), stride(m.stride) {}  // NOLINT: a writable one reads too
};

// The ranks of a one-shot peer all-reduce (peer_allreduce.cu; set up by backends/cuda/peer_allreduce.cpp):
// every rank's exchange buffer (two halves of halfBytes) and flag slots, opened in this process through
// CUDA IPC, and this rank's own call counters.
constexpr int kPeerAllReduceMaxRanks = 8;
constexpr int kPeerAllReduceMaxBlocks = 32;
struct PeerAllReduceRanks {
  int rank = 0;
  int world = 1;
  char* buffers[kPeerAllReduceMaxRanks] = {};
  uint32_t* flags[kPeerAllReduceMaxRanks] = {};  // [kPeerAllReduceMaxBlocks][kPeerAllReduceMaxRanks] each
  uint32_t* counters = nullptr;                  // [kPeerAllReduceMaxBlocks], this rank's
  size_t halfBytes = 0;
};
// y = the sum over the ranks of their x (bytes of dtype; a multiple of 16, 16-byte aligned, at most
// halfBytes), the same on every rank. Every rank must make the same calls in the same order.
void peerAllReduce(cudaStream_t stream, const PeerAllReduceRanks& ranks, const void* x, void* y, size_t bytes, DType dtype);

void embedding(cudaStream_t stream, const int32_t* ids, int64_t numTokens, const void* table, DType tableDType,
               int64_t hidden, float scale, Matrix out);
// out[t] = table[ids[t] - vocabStart] * scale for the ids in [vocabStart, vocabStart + rows), zeros for
// the others: a token embedding split by vocabulary across tensor-parallel ranks (an all-reduce follows).
void vocabSliceEmbedding(cudaStream_t stream, const int32_t* ids, int64_t numTokens, int64_t vocabStart, int64_t rows,
                         const void* table, DType tableDType, int64_t hidden, float scale, Matrix out);
// out[t] = table[positions[t] + offset]; positions are checked on the host first.
void positionEmbedding(cudaStream_t stream, const int32_t* positions, int64_t numTokens, int64_t offset,
                       const void* table, DType tableDType, int64_t hidden, Matrix out);

void rmsNorm(cudaStream_t stream, ConstMatrix x, int64_t rows, const void* w, DType wDType, int64_t numGroups,
             int64_t groupSize, float eps, float weightOffset, Matrix y);
void layerNorm(cudaStream_t stream, ConstMatrix x, int64_t rows, const void* w, DType wDType, const float* bias,
               int64_t H, float eps, Matrix y);

// The residual add fused with the norm that reads it: sum = a + b (stored in sum's dtype), y = the norm of
// the stored sum (whole rows of H), in one block per row.
void addRmsNorm(cudaStream_t stream, ConstMatrix a, ConstMatrix b, int64_t rows, int64_t H, const void* w, DType wDType,
                float eps, float weightOffset, Matrix sum, Matrix y);
void addLayerNorm(cudaStream_t stream, ConstMatrix a, ConstMatrix b, int64_t rows, int64_t H, const void* w,
                  DType wDType, const float* bias, float eps, Matrix sum, Matrix y);

enum class Elementwise : int { Add, Mul, Silu, Swiglu, Gelu, GeluTanh, Geglu, GegluTanh, Relu, Softcap, Copy };
// out = f(a[, b]) over [rows, cols]; `param` is the softcap's cap; Copy converts a to out's dtype. out
// may alias a or b.
void elementwise(cudaStream_t stream, Elementwise op, ConstMatrix a, ConstMatrix b, int64_t rows, int64_t cols,
                 float param, Matrix out);
// Small-batch linear for 16-bit weights: y[r, n] = x[r, :] . w[n, :] (+ bias[n]) for rows <= kMaxGemvRows,
// x of the weights' dtype. gemvApplies says whether it takes these operands (dtype, row count, 16-byte
// alignment of rows); otherwise the caller uses cuBLASLt.
constexpr int64_t kMaxGemvRows = 8;
bool gemvApplies(DType t, const void* x, int64_t rows, int64_t xStride, const void* w, int64_t K);
void gemv(cudaStream_t stream, DType t, const void* x, int64_t rows, int64_t xStride, const void* w, int64_t N,
          int64_t K, const float* bias, Matrix y);

// Weight-only int8 linears (gemv_int8.cu): w is an int8 matrix [N, K] (codes, then N float32 scales;
// dtype.h), y[r, n] = scale[n] * (x[r, :] . q[n, :]) (+ bias[n]), x of the activation dtype (float32,
// float16 or bfloat16). gemvInt8 takes decode rows when gemvInt8Applies; otherwise widenInt8 writes the
// codes as outType into `out` ([N, K], exact), the caller multiplies with cuBLASLt, and scaleColumns
// applies the scales and the bias to its output.
// The batch-1 GEMV of an int8 or int4 matrix with a bfloat16 row x (gemv.cu): gemvKernel over the weight
// format, split-K as the 16-bit GEMV (2 warps a feature; KILN_CUDA_QUANTIZED_GEMV_SPLIT=1|4 changes that,
// =0 takes gemvInt8 / gemvInt4 instead).
bool gemvQuantizedApplies(DType t, DType xType, const void* x, int64_t rows, const void* w, int64_t K, int64_t groupSize);
void gemvQuantized(cudaStream_t stream, DType t, const void* x, const void* w, int64_t N, int64_t K, int64_t groupSize,
                   const float* bias, Matrix y);
bool gemvInt8Applies(DType xType, const void* x, int64_t rows, int64_t xStride, const void* w, int64_t K);
void gemvInt8(cudaStream_t stream, DType xType, const void* x, int64_t rows, int64_t xStride, const void* w, int64_t N,
              int64_t K, const float* bias, Matrix y);
void widenInt8(cudaStream_t stream, const void* w, int64_t N, int64_t K, DType outType, void* out);
void scaleColumns(cudaStream_t stream, Matrix y, int64_t rows, int64_t N, const void* w, int64_t K, const float* bias);

// Weight-only int4 linears (gemv_int4.cu, decision 0014): w is an int4 matrix [N, K] of group size G
// (packed codes, then N * K / G bfloat16 scales; dtype.h), y[r, n] = sum_k x[r, k] * q[n, k] *
// scale[n, k / G] (+ bias[n]), x of the activation dtype. gemvInt4 takes decode rows when gemvInt4Applies;
// otherwise dequantizeInt4 writes q * scale as outType into `out` ([N, K]) for the cuBLASLt GEMM.
bool gemvInt4Applies(DType xType, const void* x, int64_t rows, int64_t xStride, const void* w, int64_t K);
void gemvInt4(cudaStream_t stream, DType xType, const void* x, int64_t rows, int64_t xStride, const void* w, int64_t N,
              int64_t K, int64_t G, const float* bias, Matrix y);
void dequantizeInt4(cudaStream_t stream, const void* w, int64_t N, int64_t K, int64_t G, DType outType, void* out);

// FP8 e4m3 linears (fp8.cu, decision 0015): w is an FP8 matrix [N, K] (e4m3 codes, then one float32
// scale; dtype.h), K % 16 == 0, and each row of x (float32, float16 or bfloat16) is quantized to e4m3 with
// its own scale (kiln/fp8.h). gemvFp8 takes decode rows when gemvFp8Applies (its blocks quantize x into
// shared memory: rows * K bytes, at most kMaxGemvFp8SharedBytes; prepareFp8Kernels, once before any
// launch, allows that much). Otherwise quantizeRowsFp8 writes the codes ([rows, ldCodes] bytes) and the
// row scales into scratch, the caller multiplies codes by weights with cuBLASLt's FP8 GEMM into float32
// acc [rows, ldAcc], and fp8Epilogue writes y = fma(acc, aScale[r] * wScale, bias[n]).
constexpr int kMaxGemvFp8SharedBytes = 96 * 1024;
bool gemvFp8Applies(DType xType, const void* x, int64_t rows, int64_t xStride, const void* w, int64_t K);
void prepareFp8Kernels();
void gemvFp8(cudaStream_t stream, DType xType, const void* x, int64_t rows, int64_t xStride, const void* w, int64_t N,
             int64_t K, const float* bias, Matrix y);
void quantizeRowsFp8(cudaStream_t stream, DType xType, const void* x, int64_t rows, int64_t xStride, int64_t K,
                     void* codes, int64_t ldCodes, float* aScale);
void fp8Epilogue(cudaStream_t stream, const float* acc, int64_t ldAcc, int64_t rows, int64_t N, const float* aScale,
                 const void* w, int64_t K, const float* bias, Matrix y);

// The linear with its neighbours fused (spec::Linear's prologue and epilogue; the builder's
// lower/fuse-linear-neighbours.ts), for decode rows: one GEMV kernel instead of a norm, the GEMV and a
// rope / SwiGLU / residual-add kernel. Each block norms the rows into shared memory itself (they are a
// few KB, read once from L2) while its first weights are in flight, and each warp applies the epilogue to
// the features it owns: a pair (i, i + N/2) for SwiGLU, the pair that rope rotates together for rope.
// Results equal the separate kernels' (the norm's sum of squares may round differently in its last bit:
// another summation order).
struct GemvFusion {
  // Prologue: normWeight not null => the GEMV's operand is RMSNorm(x) rounded to the weights' type.
  const void* normWeight = nullptr;
  DType normWDType = DType::F32;
  float normEps = 0.0f, normWeightOffset = 0.0f;
  // add_rms_norm prologue: the norm's input is x + addend; block 0 stores it to sum.
  ConstMatrix addend{nullptr, DType::F32, 0};
  Matrix sum{};
  enum Kind : int { None = 0, Residual = 1, Swiglu = 2, Rope = 3 } epilogue = None;
  // Residual: y += residual (any dtype; data null for none).
  ConstMatrix residual{nullptr, DType::F32, 0};
  // Rope over [q | k | v] (qCols, kCols wide): q' to y, k' to ropedK, v to v, at the step's positions;
  // (cos, sin) from cosSin below tablePositions (as rope()).
  Matrix ropedK{}, v{};
  int64_t qCols = 0, kCols = 0, headDim = 0, rotaryDim = 0;
  bool interleaved = false;
  const float* cosSin = nullptr;
  int64_t tablePositions = 0;
  const float* invFreq = nullptr;
  float attentionScaling = 1.0f;
  const int32_t* positions = nullptr;
  // Rope with kvLayer >= 0: k' and v also go into that layer of the paged KV cache (elements of kvDType)
  // at the step's positions, as storeKvRows would store them.
  int64_t kvLayer = -1;
  void* kvPool = nullptr;
  DType kvDType = DType::F32;
  int64_t kvNumLayers = 0, kvTokensPerBlock = 0;
  const int32_t* tokenSeq = nullptr;
  const int32_t* blockTables = nullptr;
  int64_t blockTableStride = 0;
  // int4 weights: input features per scale.
  int64_t groupSize = 0;
};
// Whether gemvFused takes these operands: bfloat16 weights and at most kMaxFusedGemvRows rows, or int8 /
// int4 weights (W8A16 / W4A16, dtype.h) or FP8 ones (x quantized in the kernel, kiln/fp8.h) and one row; x of bfloat16 (of float32, float16 or bfloat16 with a
// norm prologue), 16-byte aligned rows. (Each
// (rows, prologue, epilogue) is its own kernel: the batch-1 path that matters is kept to what compiles
// in reasonable time; float16 engines and larger batches run the neighbours as separate kernels.)
constexpr int64_t kMaxFusedGemvRows = 4;
bool gemvFusedApplies(DType t, ConstMatrix x, int64_t rows, const void* w, int64_t K, bool normPrologue);
// y: the linear's output (SwiGLU: [rows, N/2]; rope: q').
void gemvFused(cudaStream_t stream, DType t, ConstMatrix x, int64_t rows, const void* w, int64_t N, int64_t K,
               const float* bias, const GemvFusion& f, Matrix y);

// y[r, n] += bias[n] (float32 bias).
void addBias(cudaStream_t stream, Matrix y, int64_t rows, const float* bias, int64_t N);

// cosSin, when not null, holds [tablePositions][rotaryDim / 2] pairs (cos, sin) × attentionScaling made on
// the host as the kernel would make them (ropeCosSinTable); positions past the table are computed.
void rope(cudaStream_t stream, ConstMatrix x, int64_t numTokens, const int32_t* positions, int64_t numHeads,
          int64_t headDim, int64_t rotaryDim, bool interleaved, const float* invFreq, float attentionScaling,
          const float* cosSin, int64_t tablePositions, Matrix y);
// rope of a QKV product [q | k | v] (q's numHeads heads, then k's numKvHeads, then v) in one launch: q'
// into y, k' into ropedK, and, with kv, k' (as rounded to ropedK's type) and v into layer `layer` of the
// cache at the step's positions: what rope on q, rope on k and storeKvRows do, without two launches.
void ropeQkv(cudaStream_t stream, ConstMatrix product, const DeviceStep& step, int64_t numHeads, int64_t numKvHeads,
             int64_t headDim, int64_t rotaryDim, bool interleaved, const float* invFreq, float attentionScaling,
             const float* cosSin, int64_t tablePositions, Matrix y, Matrix ropedK, DType cacheDType, const DeviceKv* kv,
             int32_t layer);

// Stores the step's K and V rows into layer `layer` of the cache (elements of `cacheDType`), then attends
// (attentionKernel's semantics: causal, sliding window, softcap, ALiBi, GQA/MQA) for every token and
// query head.
// Decode steps of a few sequences split each (token, query head)'s keys over several blocks
// (flash-decoding's split-K), so that a long context spreads over the GPU instead of numHeads blocks:
// a block per split of at least minKeys keys, up to `splits` of them (chosen per batch size, so that a
// captured step's launch fits every step of its size). Each writes its online-softmax partial to
// `partials`; the last to finish (a ticket in `counters`, back at 0 after) merges them. splits <= 1: off.
struct AttentionSplit {
  float* partials = nullptr;      // [token * numHeads + head][splits][headDim + 2]
  unsigned* counters = nullptr;   // [block row: token * numHeads (or numKvHeads) + head], zero between launches
  int32_t splits = 1;
  int32_t minKeys = 256;
};
// Whether a decode step of numTokens tokens runs grouped by KV head (a block per token and KV head for
// its group of query heads; attention_decode.cu) rather than a block per token and query head: from
// kGroupedDecodeBatch sequences on (below, a block per query head spreads a step wider).
constexpr int64_t kGroupedDecodeBatch = 4;
// ... and below kTiledDecodeFromBatch: larger decode steps take the tensor-core tiles of prefill attention.
constexpr int64_t kTiledDecodeFromBatch = 32;
// Where the mma tiles do not take the cache and heads (attention_prefill.h: prefillMmaApplies), decode
// stays grouped at every batch size.
bool decodeGroupedByKvHead(int64_t numTokens, DType cacheDType, int64_t headDim, int64_t group, float softcap,
                           const float* alibiSlopes);
// The largest split count worth launching for a decode step of numTokens tokens with `blocksPerToken`
// blocks each (query heads, or KV heads when grouped): enough blocks to cover every SM twice.
int32_t attentionSplits(int64_t numTokens, int64_t blocksPerToken, int multiProcessors);
constexpr int32_t kMaxAttentionSplits = 16;
// Room for split-K's tickets (one per block row: token x query or KV head) and partials (one per token x
// query head x split) when splitting is on, i.e. when a step has fewer than 2 SMs' worth of block rows;
// query heads per KV head at most 8 on the grouped path.
inline int64_t attentionSplitCounters(int multiProcessors) { return 4 * static_cast<int64_t>(multiProcessors) + kMaxAttentionSplits; }
inline int64_t attentionSplitPartials(int multiProcessors) { return 8 * attentionSplitCounters(multiProcessors); }
// storeRows = false: the step's K and V rows are in the cache already (storeKvRows, or a fused linear).
void attention(cudaStream_t stream, DType cacheDType, const DeviceStep& step, const DeviceKv& kv, int32_t layer,
               ConstMatrix q, ConstMatrix k, ConstMatrix v, int64_t numHeads, int64_t numKvHeads, int64_t headDim,
               float scale, int64_t slidingWindow, float softcap, const float* alibiSlopes, Matrix out,
               const AttentionSplit& split = AttentionSplit{}, bool storeRows = true);
// The step's K and V rows (numKvHeads * headDim each) into layer `layer` of the cache.
void storeKvRows(cudaStream_t stream, DType cacheDType, const DeviceStep& step, const DeviceKv& kv, int32_t layer,
                 ConstMatrix k, ConstMatrix v);

void gatherRows(cudaStream_t stream, ConstMatrix x, const int32_t* rows, int64_t numRows, int64_t cols, Matrix out);

// MoE routing: for each token, softmax(x . router^T) over E experts in float32, topK kept (ties to the
// lower index), optionally renormalised; weights[t, e] is the kept probability, 0 for the others.
void moeRoute(cudaStream_t stream, ConstMatrix x, int64_t T, const void* router, DType routerDType,
              int64_t numExperts, int64_t hidden, int64_t topK, bool normalizeTopK, float* weights);
// acc[t, :] += weights[t, expert] * d[t, :] where that weight is not 0 (acc float32 [T, H]).
void moeAccumulate(cudaStream_t stream, ConstMatrix d, int64_t T, int64_t H, const float* weights,
                   int64_t numExperts, int64_t expert, float* acc);

}  // namespace cuda
}  // namespace kiln
