#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kiln/backends/cpu/kernels/avx2.h"
#include "kiln/backends/cpu/kernels/avx512.h"
#include "kiln/backends/cpu/kernels/kernels.h"
#include "kiln/backends/cpu/kernels/portable.h"

namespace kiln {

namespace {

// Below about this many multiply-adds in the whole call, threads cost more than they save.
constexpr int64_t kMinWorkToSplit = 1 << 15;

float roundToF16(float v) { return f16ToF32(f32ToF16(v)); }

struct CacheAddressing {
  float* pool;
  int64_t numLayers;
  int64_t layer;
  int64_t tokensPerBlock;
  int64_t rowSize;      // numKvHeads * headDim
  int64_t blockStride;  // tokensPerBlock * rowSize

  // Row of K (which = 0) or V (which = 1) of position pos of the sequence whose block table is `table`.
  float* row(const int32_t* table, int64_t pos, int which) const {
    const int64_t block = table[pos / tokensPerBlock];
    return pool + ((block * numLayers + layer) * 2 + which) * blockStride + (pos % tokensPerBlock) * rowSize;
  }
};

}  // namespace

void attentionKernel(const KernelEnv& env, const StepContext& step, int32_t layer, const float* q, int64_t qStride,
                     const float* k, int64_t kStride, const float* v, int64_t vStride, int64_t numHeads,
                     int64_t numKvHeads, int64_t headDim, float scale, int64_t slidingWindow,
                     const AttentionExtras& extras, float* out, int64_t outStride) {
  const int64_t T = step.numTokens;
  if (T <= 0 || numHeads <= 0 || numKvHeads <= 0 || headDim <= 0) return;
  CacheAddressing cache;
  cache.pool = step.kv.pool;
  cache.numLayers = step.kv.numLayers;
  cache.layer = layer;
  cache.tokensPerBlock = step.kv.tokensPerBlock;
  cache.rowSize = numKvHeads * headDim;
  cache.blockStride = cache.tokensPerBlock * cache.rowSize;

  // 1. Every token's K and V go into the cache first: in a prefill, token t attends to the tokens of
  //    its sequence packed before it in this very step.
  for (int64_t t = 0; t < T; ++t) {
    const int32_t* table = step.blockTables[step.tokenSeq[t]];
    const size_t bytes = static_cast<size_t>(cache.rowSize) * sizeof(float);
    float* kRow = cache.row(table, step.positions[t], 0);
    float* vRow = cache.row(table, step.positions[t], 1);
    std::memcpy(kRow, k + t * kStride, bytes);
    std::memcpy(vRow, v + t * vStride, bytes);
    if (extras.roundF16) {
      for (int64_t i = 0; i < cache.rowSize; ++i) {
        kRow[i] = roundToF16(kRow[i]);
        vRow[i] = roundToF16(vRow[i]);
      }
    }
  }

  const int64_t group = numHeads / numKvHeads;
  // Tokens are visited in the order 0, T-1, 1, T-2, ... so that the contiguous ranges handed to threads
  // get a fair share of a prefill's short and long rows.
  auto tokenOf = [T](int64_t slot) { return (slot % 2 == 0) ? slot / 2 : T - 1 - slot / 2; };
  auto windowStart = [slidingWindow](int64_t pos) {
    return slidingWindow > 0 ? std::max<int64_t>(0, pos - slidingWindow + 1) : 0;
  };

  // 2a. AVX2: one task per (token, KV head), all query heads of the group at once, walking the cache a
  //     block at a time with an online softmax (attention_avx2.cpp).
  auto avxBody = [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scratch;
    const size_t need = static_cast<size_t>(2 * group + cache.tokensPerBlock);
    if (scratch.size() < need) scratch.resize(need);
    avx2::AttentionGroupArgs a;
    a.group = group;
    a.headDim = headDim;
    a.pool = cache.pool;
    a.tokensPerBlock = cache.tokensPerBlock;
    a.blockPitch = cache.numLayers * 2 * cache.blockStride;
    a.rowStride = cache.rowSize;
    a.scale = scale;
    a.softcap = extras.softcap;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t t = tokenOf(task / numKvHeads);
      const int64_t kvHead = task % numKvHeads;
      const int64_t h0 = kvHead * group;
      a.q = q + t * qStride + h0 * headDim;
      a.out = out + t * outStride + h0 * headDim;
      a.blockTable = step.blockTables[step.tokenSeq[t]];
      a.kOffset = layer * 2 * cache.blockStride + kvHead * headDim;
      a.vOffset = a.kOffset + cache.blockStride;
      a.hi = step.positions[t];
      a.lo = windowStart(a.hi);
      a.alibiSlopes = extras.alibiSlopes ? extras.alibiSlopes + h0 : nullptr;
      avx2::attendGroup(a, scratch.data());
    }
  };

  // 2a'. AVX-512, several tokens: one task per (tile of up to 16 / group consecutive tokens, KV head),
  //     their query heads scored together against 16 keys at a time (attention_avx512.cpp). A tile whose
  //     tokens belong to different sequences is cut where the sequence changes. Tiles are visited in the
  //     same alternating order as tokens above.
  const int64_t tileTokens = std::max<int64_t>(1, 16 / group);
  const int64_t numTiles = (T + tileTokens - 1) / tileTokens;
  auto tileBody = [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scratch;
    const size_t need = static_cast<size_t>(32 * headDim + 48);
    if (scratch.size() < need) scratch.resize(need);
    avx512::AttentionTileArgs a;
    a.group = group;
    a.headDim = headDim;
    a.pool = cache.pool;
    a.tokensPerBlock = cache.tokensPerBlock;
    a.blockPitch = cache.numLayers * 2 * cache.blockStride;
    a.rowStride = cache.rowSize;
    a.scale = scale;
    a.softcap = extras.softcap;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t slot = task / numKvHeads;
      const int64_t tile = (slot % 2 == 0) ? slot / 2 : numTiles - 1 - slot / 2;
      const int64_t kvHead = task % numKvHeads;
      const int64_t h0 = kvHead * group;
      a.kOffset = layer * 2 * cache.blockStride + kvHead * headDim;
      a.vOffset = a.kOffset + cache.blockStride;
      a.alibiSlopes = extras.alibiSlopes ? extras.alibiSlopes + h0 : nullptr;
      const int64_t tEnd = std::min(T, (tile + 1) * tileTokens);
      for (int64_t t0 = tile * tileTokens; t0 < tEnd;) {
        int64_t t1 = t0 + 1;
        while (t1 < tEnd && step.tokenSeq[t1] == step.tokenSeq[t0]) ++t1;
        a.numTokens = t1 - t0;
        a.blockTable = step.blockTables[step.tokenSeq[t0]];
        for (int64_t t = t0; t < t1; ++t) {
          a.q[t - t0] = q + t * qStride + h0 * headDim;
          a.out[t - t0] = out + t * outStride + h0 * headDim;
          a.hi[t - t0] = step.positions[t];
          a.lo[t - t0] = windowStart(step.positions[t]);
        }
        avx512::attendTile(a, scratch.data());
        t0 = t1;
      }
    }
  };

  // 2b. Portable: one task per (token, query head); softmax with the maximum subtracted, all in float32
  //     (with roundF16, the query and the weights rounded to float16 as llama.cpp does).
  auto portableBody = [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> probs;
    thread_local std::vector<float> qRounded;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t t = tokenOf(task / numHeads);
      const int64_t h = task % numHeads;
      const int64_t kvHead = h / group;
      const int64_t pos = step.positions[t];
      const int64_t lo = windowStart(pos);
      const int64_t len = pos - lo + 1;
      const int32_t* table = step.blockTables[step.tokenSeq[t]];
      const float* qh = q + t * qStride + h * headDim;
      if (extras.roundF16) {
        qRounded.resize(static_cast<size_t>(headDim));
        for (int64_t i = 0; i < headDim; ++i) qRounded[i] = roundToF16(qh[i]);
        qh = qRounded.data();
      }
      float* oh = out + t * outStride + h * headDim;
      if (static_cast<int64_t>(probs.size()) < len) probs.resize(static_cast<size_t>(len));

      float maxScore = -INFINITY;
      const float softcap = extras.softcap;
      const float slope = extras.alibiSlopes ? extras.alibiSlopes[h] : 0.0f;
      for (int64_t j = 0; j < len; ++j) {
        float s = scale * portable::dot(qh, cache.row(table, lo + j, 0) + kvHead * headDim, headDim);
        if (softcap > 0.0f) s = softcap * std::tanh(s / softcap);
        if (extras.alibiSlopes) s += slope * static_cast<float>(lo + j);
        probs[j] = s;
        maxScore = std::max(maxScore, s);
      }
      float sum = 0.0f;
      for (int64_t j = 0; j < len; ++j) {
        probs[j] = std::exp(probs[j] - maxScore);
        sum += probs[j];
      }
      const float invSum = 1.0f / sum;
      std::fill(oh, oh + headDim, 0.0f);
      for (int64_t j = 0; j < len; ++j) {
        const float p = probs[j] * invSum;
        portable::axpy(extras.roundF16 ? roundToF16(p) : p, cache.row(table, lo + j, 1) + kvHead * headDim, oh, headDim);
      }
    }
  };

  const bool avx = env.isa >= Isa::Avx2 && !extras.roundF16;
  const int64_t tasks = T * (avx ? numKvHeads : numHeads);
  int64_t work = 0;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t pos = step.positions[t];
    work += (pos - windowStart(pos) + 1) * numHeads * headDim * 2;
  }
  const bool split = env.pool && env.pool->size() > 1 && work >= kMinWorkToSplit;
  // One token (decode) keeps the per-token path; from two, tiles pay. A tile holds at most 16 query
  // heads, so groups wider than that (multi-query attention with many heads) keep it too.
  const bool tiles = avx && env.isa >= Isa::Avx512 && T >= 2 && group <= 16;
  if (tiles) {
    const int64_t tileTasks = numTiles * numKvHeads;
    if (split) env.pool->parallelFor(tileTasks, 1, tileBody); else tileBody(0, tileTasks);
  } else if (avx) {
    if (split) env.pool->parallelFor(tasks, 1, avxBody); else avxBody(0, tasks);
  } else {
    if (split) env.pool->parallelFor(tasks, 1, portableBody); else portableBody(0, tasks);
  }
}

}  // namespace kiln
