// Softmax, log-softmax, the draw of the next token and the batched entry point.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kiln/sampling/sampling.h"
#include "kiln/thread_pool.h"

namespace kiln::sampling {

namespace {

// Index of the largest score, the first on ties (torch.argmax's choice). 0 when every score is masked.
int32_t argmax(const float* x, int64_t vocab) {
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i) {
    if (x[i] > x[best]) best = i;
  }
  return static_cast<int32_t>(best);
}

float maxOf(const float* x, int64_t vocab) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < vocab; ++i) m = std::max(m, x[i]);
  return m;
}

// max + log(sum(exp(x - max))), accumulated in double.
double logSumExp(const float* x, int64_t vocab) {
  const double max = maxOf(x, vocab);
  if (std::isinf(max)) return max;
  double sum = 0.0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(x[i]) - max);
  return max + std::log(sum);
}

// The `n` highest log-probabilities, most likely first, lowest id first on ties: one pass with an
// insertion into a sorted array of n <= kMaxLogprobs entries.
void topLogprobs(const float* processed, int64_t vocab, double logZ, int32_t n, SampleOutput& out) {
  out.numTop = static_cast<int32_t>(std::min<int64_t>(n, vocab));
  int32_t filled = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    const float s = processed[i];
    if (filled == out.numTop && !(s > processed[out.topIds[filled - 1]])) continue;
    int32_t at = filled < out.numTop ? filled++ : filled - 1;
    while (at > 0 && s > processed[out.topIds[at - 1]]) {
      out.topIds[at] = out.topIds[at - 1];
      --at;
    }
    out.topIds[at] = static_cast<int32_t>(i);
  }
  for (int32_t k = 0; k < out.numTop; ++k) {
    out.topLogprobs[k] = static_cast<float>(static_cast<double>(processed[out.topIds[k]]) - logZ);
  }
}

}  // namespace

int64_t applyTokenMask(float* logits, int64_t vocab, const uint32_t* allowed) {
  constexpr float kMasked = -std::numeric_limits<float>::infinity();
  int64_t live = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    if ((allowed[i >> 5] >> (i & 31)) & 1u) {
      ++live;
    } else {
      logits[i] = kMasked;
    }
  }
  return live;
}

void distributionRow(const float* processed, int64_t vocab, const SamplingParams& params, float* probs) {
  if (params.temperature == 0.0f) {
    std::fill(probs, probs + vocab, 0.0f);
    probs[argmax(processed, vocab)] = 1.0f;
    return;
  }
  const double logZ = logSumExp(processed, vocab);
  for (int64_t i = 0; i < vocab; ++i) probs[i] = static_cast<float>(std::exp(static_cast<double>(processed[i]) - logZ));
}

void logSoftmaxRow(const float* processed, int64_t vocab, float* logprobs) {
  const double logZ = logSumExp(processed, vocab);
  for (int64_t i = 0; i < vocab; ++i) logprobs[i] = static_cast<float>(static_cast<double>(processed[i]) - logZ);
}

SampleOutput sampleProcessed(const float* processed, int64_t vocab, const SamplingParams& params, uint64_t step,
                             uint32_t sequenceIndex, bool wantLogprob) {
  SampleOutput out;
  if (params.temperature == 0.0f && !wantLogprob && params.logprobs <= 0) {
    out.token = argmax(processed, vocab);
    return out;
  }
  const double logZ = logSumExp(processed, vocab);
  if (params.temperature == 0.0f || std::isinf(logZ)) {
    out.token = argmax(processed, vocab);
  } else {
    // Inverse CDF in token order: the first token whose cumulative weight exceeds u * total. Masked
    // tokens weigh 0 and can never be chosen; rounding at the very end falls back to the last live token.
    const double max = maxOf(processed, vocab);
    double total = 0.0;
    for (int64_t i = 0; i < vocab; ++i) total += std::exp(static_cast<double>(processed[i]) - max);
    const double target = uniform(params.seed, step, sequenceIndex) * total;
    double cumulative = 0.0;
    int32_t last = -1;
    for (int64_t i = 0; i < vocab; ++i) {
      const double w = std::exp(static_cast<double>(processed[i]) - max);
      if (w == 0.0) continue;
      last = static_cast<int32_t>(i);
      cumulative += w;
      if (cumulative > target) break;
    }
    out.token = last;
  }
  out.logprob = static_cast<float>(static_cast<double>(processed[out.token]) - logZ);
  if (params.logprobs > 0) topLogprobs(processed, vocab, logZ, std::min(params.logprobs, kMaxLogprobs), out);
  return out;
}

void sampleRows(const SampleRow* rows, int64_t numRows, int64_t vocab, SampleOutput* out, ThreadPool* pool) {
  auto run = [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const SampleRow& row = rows[r];
      if (row.allowed != nullptr) applyTokenMask(row.logits, vocab, row.allowed);
      processLogits(row.logits, vocab, row.tokens, *row.params);
      out[r] = sampleProcessed(row.logits, vocab, *row.params, row.step, row.sequenceIndex, row.wantLogprob);
    }
  };
  if (pool != nullptr && numRows > 1) {
    pool->parallelFor(numRows, 1, run);
  } else {
    run(0, numRows);
  }
}

}  // namespace kiln::sampling
