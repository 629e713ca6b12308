// Sampling on the device: one block per row draws the next token from float32 logits with exactly the
// CPU sampler's semantics (kiln/sampling: processors.cpp, sampler.cpp), so that a seed gives the same
// tokens on either backend. The sequence-dependent controls arrive as sparse edits made on the host
// (collectSparseControls); the warpers and the draw run here:
//   - float arithmetic as the CPU does it, operation by operation (__fmul_rn & co.: no contraction into
//     FMAs, which nvcc would otherwise make);
//   - the softmax sums in double, as on the CPU; only their order differs (a parallel sum), which moves a
//     result by about 1e-16 relative and can change a token only when the uniform lands that close to a
//     boundary;
//   - top-k and top-p find their threshold by radix selection over the scores' bits (counts for top-k,
//     probability mass for top-p) instead of sorting, with the CPU's tie rules;
//   - the draw is the CPU's inverse CDF in token order: a block-wide prefix sum over contiguous chunks.
#include <cfloat>
#include <climits>
#include <cmath>

#include "kiln/backends/cuda/kernels/common.cuh"
#include "kiln/backends/cuda/kernels/sampling.h"

namespace kiln {
namespace cuda {

namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;

// A float's bits as an unsigned key in the float's order (-0 taken as +0, so that equal floats have
// equal keys).
__device__ __forceinline__ uint32_t orderKey(float f) {
  const uint32_t u = __float_as_uint(f == 0.0f ? 0.0f : f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ bool isMasked(float x) { return x == -INFINITY; }

struct Shared {
  double hist[256];
  double warpDouble[kWarps];
  float warpFloat[kWarps];
  int warpInt[kWarps];
  float bestValue[kWarps];
  int bestIndex[kWarps];
  int found;
  int lastLive;
  uint32_t prefix;
  double above;
  int decided;
};

__device__ double blockSumDouble(double v, Shared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (lane == 0) sh.warpDouble[warp] = v;
  __syncthreads();
  double r = lane < kWarps ? sh.warpDouble[lane] : 0.0;
  for (int o = 16; o > 0; o >>= 1) r += __shfl_xor_sync(0xffffffffu, r, o);
  return r;
}

__device__ float blockMaxFloat(float v, Shared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warpMax(v);
  __syncthreads();
  if (lane == 0) sh.warpFloat[warp] = v;
  __syncthreads();
  return warpMax(lane < kWarps ? sh.warpFloat[lane] : -INFINITY);
}

__device__ int blockSumInt(int v, Shared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (lane == 0) sh.warpInt[warp] = v;
  __syncthreads();
  int r = lane < kWarps ? sh.warpInt[lane] : 0;
  for (int o = 16; o > 0; o >>= 1) r += __shfl_xor_sync(0xffffffffu, r, o);
  return r;
}

// The exclusive prefix of `v` over the threads in order; every thread also gets the total.
__device__ double blockExclusiveScanDouble(double v, Shared& sh, double* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  double inclusive = v;
  for (int o = 1; o < 32; o <<= 1) {
    const double up = __shfl_up_sync(0xffffffffu, inclusive, o);
    if (lane >= o) inclusive += up;
  }
  __syncthreads();
  if (lane == 31) sh.warpDouble[warp] = inclusive;
  __syncthreads();
  double warpBase = 0.0, all = 0.0;
  for (int w = 0; w < kWarps; ++w) {
    if (w < warp) warpBase += sh.warpDouble[w];
    all += sh.warpDouble[w];
  }
  *total = all;
  return warpBase + inclusive - v;
}

// (value, index) ordered by value descending, then index ascending: the CPU's argmax (first on ties)
// and its top-logprobs order.
__device__ __forceinline__ bool before(float v, int i, float bv, int bi) { return v > bv || (v == bv && i < bi); }

// The first element of x in that order that comes strictly after (afterValue, afterIndex); pass
// (+inf, -1) for the first of all. Returns its index (INT_MAX when none).
__device__ int blockNextInOrder(const float* x, int vocab, float afterValue, int afterIndex, Shared& sh) {
  float bv = -INFINITY;
  int bi = INT_MAX;
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    const float v = x[i];
    if (before(v, i, afterValue, afterIndex) || (v == afterValue && i == afterIndex)) continue;
    if (before(v, i, bv, bi)) bv = v, bi = i;
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (before(ov, oi, bv, bi)) bv = ov, bi = oi;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) sh.bestValue[warp] = bv, sh.bestIndex[warp] = bi;
  __syncthreads();
  bv = lane < kWarps ? sh.bestValue[lane] : -INFINITY;
  bi = lane < kWarps ? sh.bestIndex[lane] : INT_MAX;
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (before(ov, oi, bv, bi)) bv = ov, bi = oi;
  }
  return bi;
}

// Index of the largest score, the first on ties; 0 when every score is masked (as the CPU's argmax).
__device__ int blockArgmax(const float* x, int vocab, Shared& sh) {
  const int best = blockNextInOrder(x, vocab, INFINITY, -1, sh);
  return best == INT_MAX ? 0 : best;
}

// Radix selection from the top: walks the scores' keys 8 bits at a time from the most significant,
// each time keeping the bin (from the highest scores down) at which the weight of everything above it
// plus the bin's reaches `target`. Weight(i) is 1 (Count: the target-th largest score) or p(i) (Mass:
// the score at which the probability mass from the top reaches target). Returns false when the total
// weight stays below target. On true, sh.prefix is the score's key and sh.above the weight of the
// scores strictly above it.
template <typename Weight>
__device__ bool radixSelectFromTop(const float* x, int vocab, double target, Weight weight, Shared& sh) {
  if (threadIdx.x == 0) sh.prefix = 0u, sh.above = 0.0, sh.decided = 1;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += kThreads) sh.hist[b] = 0.0;
    __syncthreads();
    const uint32_t prefix = sh.prefix;
    const uint32_t highMask = shift == 24 ? 0u : (0xFFFFFFFFu << (shift + 8));
    for (int i = threadIdx.x; i < vocab; i += kThreads) {
      const float v = x[i];
      if (isMasked(v)) continue;
      const uint32_t key = orderKey(v);
      if ((key & highMask) != (prefix & highMask)) continue;
      atomicAdd(&sh.hist[(key >> shift) & 255u], weight(i, v));
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      double above = sh.above;
      int chosen = -1, lowest = -1;
      for (int b = 255; b >= 0; --b) {
        if (sh.hist[b] == 0.0) continue;
        lowest = b;
        if (above + sh.hist[b] >= target) {
          chosen = b;
          break;
        }
        above += sh.hist[b];
      }
      if (chosen < 0) {
        // Rounding (a sum a hair below target): the lowest bin. At the first level: nothing reaches it.
        if (shift == 24 || lowest < 0) sh.decided = 0;
        chosen = lowest < 0 ? 0 : lowest;
        if (lowest >= 0) above -= sh.hist[lowest];
      }
      sh.above = above;
      sh.prefix = prefix | (static_cast<uint32_t>(chosen) << shift);
    }
    __syncthreads();
    if (!sh.decided) return false;
  }
  return true;
}

__device__ float keyToFloat(uint32_t key) {
  const uint32_t u = (key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key;
  return __uint_as_float(u);
}

// Max over the live scores, their count and sum of exp(x - max) in double: what the CPU's warpers and
// draw compute first.
struct Softmax {
  float max;
  int live;
  double sum;
};
__device__ Softmax softmaxOf(const float* x, int vocab, Shared& sh) {
  float m = -INFINITY;
  int live = 0;
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    const float v = x[i];
    if (isMasked(v)) continue;
    m = fmaxf(m, v);
    ++live;
  }
  Softmax s;
  s.max = blockMaxFloat(m, sh);
  s.live = blockSumInt(live, sh);
  double sum = 0.0;
  if (s.live > 0) {
    for (int i = threadIdx.x; i < vocab; i += kThreads) {
      const float v = x[i];
      if (!isMasked(v)) sum += exp(static_cast<double>(v) - static_cast<double>(s.max));
    }
  }
  s.sum = blockSumDouble(sum, sh);
  return s;
}

// transformers' TopKLogitsWarper: mask scores below the k-th largest (ties with it kept). Masked scores
// count among the k like the CPU's nth_element over the whole row: with fewer than k live scores
// nothing is masked.
__device__ void topK(float* x, int vocab, int k, Shared& sh) {
  if (k <= 0 || k >= vocab) return;
  int live = 0;
  for (int i = threadIdx.x; i < vocab; i += kThreads) live += isMasked(x[i]) ? 0 : 1;
  if (blockSumInt(live, sh) < k) return;
  auto one = [](int, float) { return 1.0; };
  if (!radixSelectFromTop(x, vocab, static_cast<double>(k), one, sh)) return;
  const float kth = keyToFloat(sh.prefix);
  __syncthreads();
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    if (x[i] < kth) x[i] = -INFINITY;
  }
  __syncthreads();
}

// transformers' TopPLogitsWarper: the CPU sorts ascending (equal scores: the highest index first) and
// masks while the cumulative probability is <= 1 - topP. Equivalently a token stays while the mass
// of the tokens before it in descending order (equal scores: lowest index first) is below topP: the
// scores above a threshold stay, those below go, and of the tokens at the threshold those whose mass
// above (lower-index ties included) is below topP stay.
__device__ void topP(float* x, int vocab, float topPValue, Shared& sh) {
  if (topPValue >= 1.0f) return;
  const Softmax s = softmaxOf(x, vocab, sh);
  if (s.live < 2) return;
  const double maxD = static_cast<double>(s.max), sum = s.sum, target = static_cast<double>(topPValue);
  auto mass = [maxD, sum](int, float v) { return exp(static_cast<double>(v) - maxD) / sum; };
  if (!radixSelectFromTop(x, vocab, target, mass, sh)) return;
  const float threshold = keyToFloat(sh.prefix);
  const double above = sh.above;
  // The ties at the threshold in index order: contiguous chunks, a block-wide prefix of their mass.
  const int chunk = (vocab + kThreads - 1) / kThreads;
  const int begin = min(vocab, static_cast<int>(threadIdx.x) * chunk), end = min(vocab, begin + chunk);
  double mine = 0.0;
  for (int i = begin; i < end; ++i) {
    if (x[i] == threshold) mine += exp(static_cast<double>(x[i]) - maxD) / sum;
  }
  double total = 0.0;
  double prefix = blockExclusiveScanDouble(mine, sh, &total);
  __syncthreads();
  for (int i = begin; i < end; ++i) {
    const float v = x[i];
    if (v == threshold) {
      if (!(above + prefix < target)) x[i] = -INFINITY;
      prefix += exp(static_cast<double>(v) - maxD) / sum;
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    if (x[i] < threshold) x[i] = -INFINITY;
  }
  __syncthreads();
}

// transformers' MinPLogitsWarper: mask probabilities below minP times the largest.
__device__ void minP(float* x, int vocab, float minPValue, Shared& sh) {
  if (minPValue <= 0.0f) return;
  const Softmax s = softmaxOf(x, vocab, sh);
  if (s.live == 0) return;
  const double threshold = static_cast<double>(minPValue) * (1.0 / s.sum);
  __syncthreads();
  for (int i = threadIdx.x; i < vocab; i += kThreads) {
    const float v = x[i];
    if (isMasked(v)) continue;
    if (exp(static_cast<double>(v) - static_cast<double>(s.max)) / s.sum < threshold) x[i] = -INFINITY;
  }
  __syncthreads();
}

// The CPU's inverse CDF in token order: the first live token whose cumulative weight exceeds target
// (rounding at the very end: the last live token).
__device__ int drawInOrder(const float* x, int vocab, float max, double target, Shared& sh) {
  const int chunk = (vocab + kThreads - 1) / kThreads;
  const int begin = min(vocab, static_cast<int>(threadIdx.x) * chunk), end = min(vocab, begin + chunk);
  const double maxD = static_cast<double>(max);
  double mine = 0.0;
  for (int i = begin; i < end; ++i) mine += exp(static_cast<double>(x[i]) - maxD);
  if (threadIdx.x == 0) sh.found = INT_MAX, sh.lastLive = -1;
  double total = 0.0;
  double cumulative = blockExclusiveScanDouble(mine, sh, &total);
  int last = -1;
  for (int i = begin; i < end; ++i) {
    const double w = exp(static_cast<double>(x[i]) - maxD);
    if (w == 0.0) continue;
    last = i;
    cumulative += w;
    if (cumulative > target) {
      atomicMin(&sh.found, i);
      break;
    }
  }
  if (last >= 0) atomicMax(&sh.lastLive, last);
  __syncthreads();
  return sh.found != INT_MAX ? sh.found : sh.lastLive;
}

__global__ void __launch_bounds__(kThreads) sampleKernel(float* logits, int vocab, const DeviceSampleRow* rows,
                                                         const int32_t* ints, const float* floats,
                                                         const uint32_t* masks, sampling::SampleOutput* outputs) {
  startAfterPriorKernels();
  __shared__ Shared sh;
  const DeviceSampleRow p = rows[blockIdx.x];
  float* x = logits + static_cast<int64_t>(p.logitRow) * vocab;
  sampling::SampleOutput* out = outputs + blockIdx.x;

  // The grammar's mask first, then the sparse controls in processLogits's order.
  if (p.maskWordsAt >= 0) {
    const uint32_t* allowed = masks + p.maskWordsAt;
    for (int i = threadIdx.x; i < vocab; i += kThreads) {
      if (!((allowed[i >> 5] >> (i & 31)) & 1u)) x[i] = -INFINITY;
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int j = 0; j < p.biasCount; ++j) {
      const int id = ints[p.biasIdsAt + j];
      x[id] = __fadd_rn(x[id], floats[p.biasValuesAt + j]);
    }
  }
  __syncthreads();
  for (int j = threadIdx.x; j < p.repetitionCount; j += kThreads) {
    const int id = ints[p.repetitionIdsAt + j];
    const float s = x[id];
    x[id] = s < 0.0f ? __fmul_rn(s, p.repetitionPenalty) : __fdiv_rn(s, p.repetitionPenalty);
  }
  __syncthreads();
  for (int j = threadIdx.x; j < p.countCount; j += kThreads) {
    const int id = ints[p.countIdsAt + j];
    const float penalty = __fadd_rn(p.presencePenalty, __fmul_rn(p.frequencyPenalty, static_cast<float>(ints[p.countsAt + j])));
    x[id] = __fsub_rn(x[id], penalty);
  }
  __syncthreads();
  for (int j = threadIdx.x; j < p.bannedCount; j += kThreads) x[ints[p.bannedIdsAt + j]] = -INFINITY;
  __syncthreads();

  const bool greedy = p.temperature == 0.0f;
  if (greedy && !p.wantLogprob && p.logprobs <= 0) {
    const int token = blockArgmax(x, vocab, sh);
    if (threadIdx.x == 0) out->token = token, out->logprob = 0.0f, out->numTop = 0;
    return;
  }
  if (!greedy) {
    if (p.temperature != 1.0f) {
      for (int i = threadIdx.x; i < vocab; i += kThreads) x[i] = __fdiv_rn(x[i], p.temperature);
      __syncthreads();
    }
    topK(x, vocab, p.topK, sh);
    topP(x, vocab, p.topP, sh);
    minP(x, vocab, p.minP, sh);
  }
  // logZ over every score (masked ones weigh 0), as the CPU's logSumExp.
  const Softmax s = softmaxOf(x, vocab, sh);
  // An infinite max (every score masked, or an infinite logit) is its own logZ and takes the argmax.
  const bool infinite = isinf(s.max);
  const double logZ = infinite ? static_cast<double>(s.max) : static_cast<double>(s.max) + log(s.sum);
  int token;
  if (greedy || infinite) {
    token = blockArgmax(x, vocab, sh);
  } else {
    token = drawInOrder(x, vocab, s.max, p.uniform * s.sum, sh);
  }
  const int numTop = p.logprobs > 0 ? min(min(p.logprobs, sampling::kMaxLogprobs), vocab) : 0;
  if (threadIdx.x == 0) {
    out->token = token;
    out->logprob = static_cast<float>(static_cast<double>(x[token]) - logZ);
    out->numTop = numTop;
  }
  float afterValue = INFINITY;
  int afterIndex = -1;
  for (int k = 0; k < numTop; ++k) {
    const int id = blockNextInOrder(x, vocab, afterValue, afterIndex, sh);
    afterValue = x[id];
    afterIndex = id;
    if (threadIdx.x == 0) {
      out->topIds[k] = id;
      out->topLogprobs[k] = static_cast<float>(static_cast<double>(afterValue) - logZ);
    }
  }
}

}  // namespace

void sampleRows(cudaStream_t stream, float* logits, int64_t vocab, const DeviceSampleRow* rows, int64_t numRows,
                const int32_t* ints, const float* floats, const uint32_t* masks, sampling::SampleOutput* out) {
  if (numRows == 0) return;
  launch(sampleKernel, dim3(static_cast<unsigned>(numRows)), dim3(kThreads), 0, stream, logits, static_cast<int>(vocab),
         rows, ints, floats, masks, out);
}

}  // namespace cuda
}  // namespace kiln
