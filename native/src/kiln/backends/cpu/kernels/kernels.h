#pragma once
// Kiln's CPU kernels: short C-like functions over raw pointers, float32 activations, weights stored as
// float32, float16 or bfloat16 and always accumulated in float32. Every kernel has a portable path and,
// where it pays, paths for wider instruction sets (files named *_avx2.cpp, *_avx512.cpp,
// *_avx512_bf16.cpp); `env.isa` picks one, and a kernel without a path for that set uses the best lower
// one. Each has a scalar reference in native/test/.
//
// Matrices are row-major with an explicit row stride in elements, so a kernel can read or write a
// column slice of a wider buffer (the builder turns splits into such views).
#include <cstdint>

#include "kiln/dtype.h"
#include "kiln/runtime/step.h"
#include "kiln/thread_pool.h"

namespace kiln {

// Kernel sets, each a superset of the one before, so `env.isa >= Isa::Avx2` means "may use AVX2 code".
//   Avx2: AVX2, FMA, F16C.  Avx512: + AVX-512 F/BW/VL/DQ (and the OS saving zmm state).
//   Avx512Bf16: + AVX512_BF16 (vdpbf16ps) and AVX512_VNNI (vpdpbusd).
enum class Isa : uint8_t { Generic = 0, Avx2 = 1, Avx512 = 2, Avx512Bf16 = 3 };
Isa detectIsa();  // the best this CPU supports (CPUID, read once)
const char* isaName(Isa isa);  // "generic", "avx2", "avx512", "avx512_bf16"
bool parseIsa(const char* name, Isa* out);  // the inverse of isaName; false for any other string

// How a multi-row linear over int8 weights treats its input (linear_int8_act.cpp, decision 0017):
//   Float:  x stays float32 (weight-only W8A16; the only mode before decision 0017).
//   Int8x2: each row of x becomes two rows of int8 codes, the row quantized and then its rounding error
//           quantized again (about 15 bits, as accurate as float32 x on the greedy-token checks), and the
//           codes are multiplied in integers: twice the integer work of Int8, still faster than float32.
//   Int8:   one row of int8 codes per row of x (per-row scale; llama.cpp-like speed, 8-bit accuracy:
//           greedy agreement with float32 drops below the 95% bar on the fixtures, see decision 0017).
//   Adaptive: one pass for every row, and the second pass only for rows whose max|x| exceeds
//           kInt8ActCrestLimit times their RMS (where 8-bit codes lose the small elements next to outliers).
//   Auto:   Int8x2 on the Avx512Bf16 set (VNNI) for calls of at least kInt8ActMinRows rows, else Float.
// On other sets Int8, Int8x2 and Adaptive run the scalar reference (tests). KILN_CPU_INT8_ACTIVATIONS sets it.
enum class Int8Activations : uint8_t { Auto = 0, Float = 1, Int8 = 2, Int8x2 = 3, Adaptive = 4 };
// "auto", "float", "int8", "int8x2", "adaptive"
bool parseInt8Activations(const char* name, Int8Activations* out);

struct KernelEnv {
  Isa isa = Isa::Generic;
  ThreadPool* pool = nullptr;  // may be null: single-threaded
  Int8Activations int8Act = Int8Activations::Auto;
};

// out[t, :] = table[ids[t], :] * scale, table [vocab, hidden] of type `dt`. ids are checked against vocab
// by the caller.
void embeddingKernel(const KernelEnv& env, const int32_t* ids, int64_t numTokens, const void* table, DType dt,
                     int64_t hidden, float scale, float* out, int64_t outStride);

// y[r, n] = sum_k x[r, k] * w[n, k] (+ bias[n]); w is [N, K] of type `wdt`, bias float32 or null. int8
// weights (weight-only quantization) are codes with a float32 scale per row after them (dtype.h):
// y[r, n] = scale[n] * sum_k x[r, k] * q[n, k] (+ bias[n]), the codes widened to float32 exactly.
// `bf16Activations` (bfloat16 weights only; set by the linear op's attr bf16Inputs): x is rounded to
// bfloat16 first (round to nearest even), as a cuda engine stores a linear's input (decision 0007); that
// is what lets the Avx512Bf16 set multiply bfloat16 pairs with vdpbf16ps at twice the float32 FMA rate.
// Every set rounds the same way, so results do not depend on the CPU beyond float32 summation order.
void linearKernel(const KernelEnv& env, const float* x, int64_t rows, int64_t xStride, const void* w, DType wdt,
                  int64_t N, int64_t K, const float* bias, float* y, int64_t yStride, bool bf16Activations = false);

// FP8 e4m3 weights (wdt F8E4M3; linearKernel sends them here): N * K e4m3 codes then one float32 scale;
// each row of x is quantized to e4m3 with its own dynamic scale, as kiln/fp8.h defines (decision 0015).
void linearFp8Kernel(const KernelEnv& env, const float* x, int64_t rows, int64_t xStride, const void* w, int64_t N,
                     int64_t K, const float* bias, float* y, int64_t yStride);
// linearKernel for Q8_0 weights (dtype.h), as llama.cpp multiplies Q8_0 and Q4_0 matrices
// (linear_q8_0.cpp): each row of x is quantized to Q8_0 blocks, codes are multiplied in integers and each
// block's sum scaled by d_w * d_x. K must be a multiple of 32 (the op spec checks it).
void linearQ8_0Kernel(const KernelEnv& env, const float* x, int64_t rows, int64_t xStride, const uint8_t* w,
                      int64_t N, int64_t K, const float* bias, float* y, int64_t yStride);
// linearKernel for int8 weights (dtype.h's layout) with activations quantized to int8 (Int8 or Int8x2
// of Int8Activations). Each row of x gets s1 = max|x| / 127 and codes q1 = round half even(x * (127 /
// max|x|)); Int8x2 adds s2 = s1 / 254 and q2 = round half even((x - s1 q1) / s2) clamped to +-127. Then
// y[r, n] = (float(sum_k q1 q_w) * s1 (+ float(sum_k q2 q_w) * s2)) * s_w[n] (+ bias[n]), the integer sums
// exact. A row holding NaN or infinity gives NaN outputs. Needs K <= kInt8ActMaxK.
constexpr int64_t kInt8ActMinRows = 2;
constexpr int64_t kInt8ActMaxK = int64_t{1} << 17;  // 128 * 127 * K stays inside int32
// Adaptive's second pass: rows with max|x| > kInt8ActCrestLimit * rms(x) (decision 0017 has the trade).
constexpr float kInt8ActCrestLimit = 6.0f;
// The mode a call of `rows` rows runs (Float, Int8, Int8x2 or Adaptive; Auto resolved).
Int8Activations int8ActivationsFor(const KernelEnv& env, int64_t rows, int64_t K);
void linearInt8ActKernel(const KernelEnv& env, Int8Activations mode, const float* x, int64_t rows, int64_t xStride,
                         const void* w, int64_t N, int64_t K, const float* bias, float* y, int64_t yStride);
// One row of x quantized as linearInt8ActKernel does: `passes` (1 or 2) rows of K codes, their scales and
// the sums of their codes. With passes 2 and crestLimit > 0, the second pass is made only where
// max|x| > crestLimit * rms(x) (sum of squares in double); returns the passes made.
int quantizeRowInt8Act(const float* x, int64_t K, int passes, int8_t* codes, float* scales, int32_t* codeSums,
                       float crestLimit = 0.0f);

// One row of x (K a multiple of 32) as ggml's x86 quantize_row_q8_0 writes it: codes [K] and the block
// scales [K / 32] (float16 values, as float).
void quantizeRowQ8_0Activations(const float* x, int64_t K, int8_t* codes, float* scales);

// linearKernel for an int4 matrix w [N, K] of group size G (dtype.h's layout: K / 2 bytes of nibbles per
// row, then N * (K / G) bfloat16 scales; K % G == 0, G % 32 == 0), as llama.cpp multiplies Q4_0 by Q8_0:
// each row of x is quantized to int8 in blocks of 32 (quantizeInt4Activations), and
// y[r, n] = sum_b (scale[n, 32b / G] * dx[r, b]) * sum_{k in block b} (q[n, k] * xq[r, k]) (+ bias[n]),
// the block sums exact in integers, the block terms summed in float32 (linear_int4.cpp states it fully).
// `floatActivations` (W4A16; KILN_CPU_INT4_ACTIVATIONS=float32 at load): x stays float32 and the result is
// dequantize-then-multiply up to float32 summation order, as the cuda int4 engines compute; a reference,
// not tuned for speed.
void linearInt4Kernel(const KernelEnv& env, const float* x, int64_t rows, int64_t xStride, const void* w, int64_t N,
                      int64_t K, int64_t G, const float* bias, float* y, int64_t yStride, bool floatActivations = false);

// The int8 activations of linearInt4Kernel, laid out for its tiles. A row of K inputs (K % 32 == 0) is
// blocks of 32 taken four at a time ("units", the last padded with zero blocks): a unit's 128 code bytes
// hold elements 0-15 of its four blocks (16 bytes each), then elements 16-31 of the same four, which is
// where a 64-byte load of the four blocks' nibbles puts the low and the high nibbles. Beside the codes,
// per block, four copies of dx (floats) and the integer correction -8 * sum(codes) followed by three
// zeros (int32s), so a unit's scales and corrections are each one 16-lane vector.
struct Int4ActLayout {
  int64_t units;        // ceil(K / 128)
  int64_t codeStride;   // bytes of codes per row: units * 128
  int64_t scaleStride;  // floats (and int32s) of dx (and corrections) per row: units * 16
};
inline Int4ActLayout int4ActLayout(int64_t K) {
  const int64_t units = (K / 32 + 3) / 4;
  return {units, units * 128, units * 16};
}
// Index in a row's codes of element j (< 32) of block b.
inline int64_t int4ActCodeIndex(int64_t b, int64_t j) { return (b / 4) * 128 + (j / 16) * 64 + (b % 4) * 16 + j % 16; }
// Quantizes rows [0, rows) of x into q [rows, codeStride], d and c [rows, scaleStride] (the layout above).
void quantizeInt4Activations(const KernelEnv& env, const float* x, int64_t rows, int64_t xStride, int64_t K,
                             int8_t* q, float* d, int32_t* c);

// y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * (weightOffset + w[:]); w is [H] of type `wdt`.
// (weightOffset is 0 for LLaMA, 1 for Gemma's (1 + w) norm.)
void rmsNormKernel(const KernelEnv& env, const float* x, int64_t rows, int64_t xStride, const void* w, DType wdt,
                   int64_t H, float eps, float weightOffset, float* y, int64_t yStride);
// rmsNormKernel applied to each of the `numGroups` consecutive groups of `groupSize` features of a row
// separately, every group scaled by the same w [groupSize] (Qwen3's per-head q/k norm).
void rmsNormGroupsKernel(const KernelEnv& env, const float* x, int64_t rows, int64_t xStride, const void* w,
                         DType wdt, int64_t numGroups, int64_t groupSize, float eps, float weightOffset, float* y,
                         int64_t yStride);

// y[r, :] = (x[r, :] - mean) / sqrt(var + eps) * w[:] + bias[:] with the biased variance over the row (as
// torch.nn.LayerNorm); w is [H] of type `wdt`, bias float32 [H] or null (no bias).
void layerNormKernel(const KernelEnv& env, const float* x, int64_t rows, int64_t xStride, const void* w, DType wdt,
                     const float* bias, int64_t H, float eps, float* y, int64_t yStride);

// Elementwise over [rows, cols]: out = a + b, out = a * b, out = silu(a), out = silu(a) * b.
void addKernel(const KernelEnv& env, const float* a, int64_t aStride, const float* b, int64_t bStride, int64_t rows,
               int64_t cols, float* out, int64_t outStride);
void mulKernel(const KernelEnv& env, const float* a, int64_t aStride, const float* b, int64_t bStride, int64_t rows,
               int64_t cols, float* out, int64_t outStride);
void siluKernel(const KernelEnv& env, const float* a, int64_t aStride, int64_t rows, int64_t cols, float* out,
                int64_t outStride);
void swigluKernel(const KernelEnv& env, const float* gate, int64_t gateStride, const float* up, int64_t upStride,
                  int64_t rows, int64_t cols, float* out, int64_t outStride);
// out = gelu(a), exact (x/2 (1 + erf(x / sqrt 2)), `tanh` false) or the tanh approximation
// (x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), `tanh` true); out = gelu(gate) * up; out = max(a, 0);
// out = cap * tanh(a / cap).
void geluKernel(const KernelEnv& env, const float* a, int64_t aStride, int64_t rows, int64_t cols, bool tanh,
                float* out, int64_t outStride);
void gegluKernel(const KernelEnv& env, const float* gate, int64_t gateStride, const float* up, int64_t upStride,
                 int64_t rows, int64_t cols, bool tanh, float* out, int64_t outStride);
void reluKernel(const KernelEnv& env, const float* a, int64_t aStride, int64_t rows, int64_t cols, float* out,
                int64_t outStride);
void softcapKernel(const KernelEnv& env, const float* a, int64_t aStride, int64_t rows, int64_t cols, float cap,
                   float* out, int64_t outStride);

// out[t, :] = table[positions[t] + offset, :], table [tableRows, hidden] of type `dt` (learned absolute
// position embeddings). Checks every index first: returns the first t whose row is outside the table
// (writing nothing), or -1 when all are inside and out was written.
int64_t positionEmbeddingKernel(const KernelEnv& env, const int32_t* positions, int64_t numTokens, int64_t offset,
                                const void* table, DType dt, int64_t tableRows, int64_t hidden, float* out,
                                int64_t outStride);

// Mixture of experts with SwiGLU experts (Mixtral), over x [T, H]:
//   probs = softmax(x . router^T) over the E experts (float32), router [E, H] of type `routerDt`;
//   the topK most probable experts are kept (ties: the lower index first, as torch.topk), their probs
//   divided by their sum when `normalizeTopK`;
//   out[t] = sum over kept e of p_e * down_e(silu(gate_e x[t]) * up_e x[t]).
// The experts are stacked along dim 0, all of type `expertDt`: gate and up [E * I, H], down [E * H, I];
// expert e owns rows e*I .. (e+1)*I-1 of gate/up and e*H .. (e+1)*H-1 of down. Tokens are grouped by
// expert so each expert's weights are streamed once per call.
void moeKernel(const KernelEnv& env, const float* x, int64_t T, int64_t xStride, const void* router, DType routerDt,
               const void* gate, const void* up, const void* down, DType expertDt, int64_t numExperts,
               int64_t hidden, int64_t intermediate, int64_t topK, bool normalizeTopK, float* out,
               int64_t outStride);

// Rotary position embedding over x [T, numHeads * headDim]: in each head the first `rotaryDim` features
// are rotated by angle positions[t] * invFreq[i] (i < rotaryDim / 2), cos and sin multiplied by
// `attentionScaling`; the rest are copied. `interleaved` false: pairs (i, i + rotaryDim/2) (GPT-NeoX /
// LLaMA "rotate_half"); true: pairs (2i, 2i + 1) (GPT-J). The angle is computed as in transformers:
// float32 product position * invFreq, then cos/sin of that float32 value. With `llamaCppThetaBase` > 0
// the angles are llama.cpp's instead (ggml_rope_cache_init): theta = position, then theta *= s after each
// pair with s = powf(base, -2 / rotaryDim) in float32, cos/sin by cosf/sinf; invFreq is not read.
void ropeKernel(const KernelEnv& env, const float* x, int64_t numTokens, int64_t xStride, const int32_t* positions,
                int64_t numHeads, int64_t headDim, int64_t rotaryDim, bool interleaved, const float* invFreq,
                float attentionScaling, float* y, int64_t yStride, float llamaCppThetaBase = 0.0f);

// Fused attention over the paged KV cache, for layer `layer`:
//  1. stores k[t] and v[t] ([numKvHeads * headDim] each) of every packed token t into the cache of its
//     sequence step.tokenSeq[t] at position step.positions[t];
//  2. for each token t and query head h (kv head h / (numHeads / numKvHeads)), attends over the cached
//     positions j of its sequence with lo <= j <= positions[t], lo = max(0, positions[t] - slidingWindow + 1)
//     when slidingWindow > 0, else 0: softmax(scale * q.k_j) weighted sum of v_j, in float32.
// out is [T, numHeads * headDim].
// `extras` changes the scores before the softmax: s = scale * q.k_j, then s = softcap * tanh(s / softcap)
// when softcap > 0 (Gemma 2), then s += alibiSlopes[h] * j when alibiSlopes is set (BLOOM; one slope per
// query head, j the key's position).
struct AttentionExtras {
  float softcap = 0.0f;
  const float* alibiSlopes = nullptr;  // [numHeads] or null
  // llama.cpp's CPU attention over its default float16 KV cache (attr llamaCppF16, decision 0016): K and V
  // are rounded to float16 as they are stored, the query to float16 for the scores, and the normalised
  // softmax weights to float16 before they weight V (ggml's mul_mat casts its float32 operand to the
  // float16 one's type); products of float16 values are exact in float32. Runs the portable path.
  bool roundF16 = false;
};
void attentionKernel(const KernelEnv& env, const StepContext& step, int32_t layer, const float* q, int64_t qStride,
                     const float* k, int64_t kStride, const float* v, int64_t vStride, int64_t numHeads,
                     int64_t numKvHeads, int64_t headDim, float scale, int64_t slidingWindow,
                     const AttentionExtras& extras, float* out, int64_t outStride);

// out[i, :] = x[rows[i], :] for i < numRows.
void gatherRowsKernel(const KernelEnv& env, const float* x, int64_t xStride, const int32_t* rows, int64_t numRows,
                      int64_t cols, float* out, int64_t outStride);

}  // namespace kiln
