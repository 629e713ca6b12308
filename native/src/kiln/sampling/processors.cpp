// The logits processors, each mirroring the transformers processor it is named after (and the TS reference
// in packages/sampling/src/reference of the same name). Scores stay float32 like transformers'; the
// softmaxes the warpers need are accumulated in double.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kiln/sampling/sampling.h"

namespace kiln::sampling {

namespace {

constexpr float kMasked = -std::numeric_limits<float>::infinity();

bool inVocab(int64_t id, int64_t vocab) { return id >= 0 && id < vocab; }

// transformers' NoRepeatNGramLogitsProcessor: ban every token that followed an earlier occurrence of the
// last n - 1 tokens.
void banNoRepeatNgram(const SequenceTokens& t, int32_t n, int64_t vocab, std::vector<int32_t>& banned) {
  if (n <= 0 || t.numIds + 1 < n) return;
  const int32_t* ids = t.ids;
  const int64_t prefixStart = t.numIds - n + 1;
  for (int64_t start = 0; start + n <= t.numIds; ++start) {
    bool matches = true;
    for (int32_t j = 0; j < n - 1 && matches; ++j) matches = ids[start + j] == ids[prefixStart + j];
    if (matches && inVocab(ids[start + n - 1], vocab)) banned.push_back(ids[start + n - 1]);
  }
}

// transformers' NoBadWordsLogitsProcessor: a word's last token is banned when the sequence ends with the
// rest of the word.
void banBadWords(const SequenceTokens& t, const SamplingParams& p, int64_t vocab, std::vector<int32_t>& banned) {
  for (const std::vector<int32_t>& word : p.badWords) {
    if (word.empty()) continue;
    const int64_t prefix = static_cast<int64_t>(word.size()) - 1;
    if (prefix > t.numIds) continue;
    const int32_t* tail = t.ids + (t.numIds - prefix);
    if (std::equal(word.begin(), word.begin() + prefix, tail) && inVocab(word.back(), vocab)) banned.push_back(word.back());
  }
}

// transformers' TemperatureLogitsWarper.
void applyTemperature(float* logits, int64_t vocab, float temperature) {
  if (temperature == 1.0f) return;
  for (int64_t i = 0; i < vocab; ++i) logits[i] /= temperature;
}

// transformers' TopKLogitsWarper: mask scores below the k-th largest (ties with it kept).
void applyTopK(float* logits, int64_t vocab, int32_t k, std::vector<float>& scratch) {
  if (k <= 0 || k >= vocab) return;
  scratch.assign(logits, logits + vocab);
  std::nth_element(scratch.begin(), scratch.begin() + (k - 1), scratch.end(), std::greater<float>());
  const float kth = scratch[k - 1];
  for (int64_t i = 0; i < vocab; ++i) {
    if (logits[i] < kth) logits[i] = kMasked;
  }
}

// Softmax weights exp(x - max) in double of the unmasked entries; returns their sum (0 if all masked).
double expWeights(const float* logits, const std::vector<int32_t>& ids, float max, std::vector<double>& w) {
  w.resize(ids.size());
  double sum = 0.0;
  for (size_t i = 0; i < ids.size(); ++i) sum += (w[i] = std::exp(static_cast<double>(logits[ids[i]]) - max));
  return sum;
}

// The indices of the unmasked scores and their maximum: masked ones have probability 0 and change nothing.
float unmasked(const float* logits, int64_t vocab, std::vector<int32_t>& ids) {
  ids.clear();
  float max = kMasked;
  for (int64_t i = 0; i < vocab; ++i) {
    if (logits[i] == kMasked) continue;
    ids.push_back(static_cast<int32_t>(i));
    max = std::max(max, logits[i]);
  }
  return max;
}

// transformers' TopPLogitsWarper: ascending by score, mask while the cumulative probability is
// <= 1 - topP; the most likely token always stays.
void applyTopP(float* logits, int64_t vocab, float topP, std::vector<int32_t>& ids, std::vector<double>& w) {
  if (topP >= 1.0f) return;
  const float max = unmasked(logits, vocab, ids);
  if (ids.size() < 2) return;
  // Ascending by score; of equal scores the lowest index sorts last, so it is kept longest.
  std::sort(ids.begin(), ids.end(), [logits](int32_t a, int32_t b) {
    return logits[a] < logits[b] || (logits[a] == logits[b] && a > b);
  });
  const double sum = expWeights(logits, ids, max, w);
  const double limit = 1.0 - static_cast<double>(topP);
  double cumulative = 0.0;
  for (size_t r = 0; r + 1 < ids.size(); ++r) {
    cumulative += w[r] / sum;
    if (cumulative <= limit) logits[ids[r]] = kMasked;
  }
}

// transformers' MinPLogitsWarper: mask probabilities below minP times the largest.
void applyMinP(float* logits, int64_t vocab, float minP, std::vector<int32_t>& ids, std::vector<double>& w) {
  if (minP <= 0.0f) return;
  const float max = unmasked(logits, vocab, ids);
  if (ids.empty()) return;
  const double sum = expWeights(logits, ids, max, w);
  const double threshold = static_cast<double>(minP) * (1.0 / sum);  // the top token's weight is exp(0) = 1
  for (size_t i = 0; i < ids.size(); ++i) {
    if (w[i] / sum < threshold) logits[ids[i]] = kMasked;
  }
}

}  // namespace

std::string checkParams(const SamplingParams& p, int64_t vocab) {
  auto tokenOk = [vocab](int32_t id) { return id >= 0 && id < vocab; };
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature)) return "temperature must be a finite number >= 0";
  if (p.topK < 0) return "topK must be >= 0";
  if (!(p.topP > 0.0f && p.topP <= 1.0f)) return "topP must be in (0, 1]";
  if (!(p.minP >= 0.0f && p.minP <= 1.0f)) return "minP must be in [0, 1]";
  if (!(p.repetitionPenalty > 0.0f) || !std::isfinite(p.repetitionPenalty)) return "repetitionPenalty must be > 0";
  if (!std::isfinite(p.presencePenalty)) return "presencePenalty must be finite";
  if (!std::isfinite(p.frequencyPenalty)) return "frequencyPenalty must be finite";
  if (p.noRepeatNgramSize < 0) return "noRepeatNgramSize must be >= 0";
  if (p.minTokens < 0) return "minTokens must be >= 0";
  if (p.endId != -1 && !tokenOk(p.endId)) return "endId " + std::to_string(p.endId) + " is outside the vocabulary";
  for (size_t i = 0; i < p.badWords.size(); ++i) {
    if (p.badWords[i].empty()) return "badWords[" + std::to_string(i) + "] is empty";
    for (int32_t id : p.badWords[i]) {
      if (!tokenOk(id)) return "badWords[" + std::to_string(i) + "] holds token " + std::to_string(id) + ", outside the vocabulary";
    }
  }
  if (p.biasIds.size() != p.biasValues.size()) return "embeddingBias has different numbers of ids and values";
  for (size_t i = 0; i < p.biasIds.size(); ++i) {
    if (!tokenOk(p.biasIds[i])) return "embeddingBias token " + std::to_string(p.biasIds[i]) + " is outside the vocabulary";
    if (std::isnan(p.biasValues[i]) || p.biasValues[i] == std::numeric_limits<float>::infinity()) {
      return "embeddingBias[" + std::to_string(p.biasIds[i]) + "] must be finite or -Infinity";
    }
  }
  if (p.logprobs < 0 || p.logprobs > kMaxLogprobs) return "logprobs must be in [0, " + std::to_string(kMaxLogprobs) + "]";
  return {};
}

void collectSparseControls(const SequenceTokens& t, const SamplingParams& p, int64_t vocab, SparseControls* out) {
  out->biasIds.clear();
  out->biasValues.clear();
  out->repetitionIds.clear();
  out->countIds.clear();
  out->counts.clear();
  out->bannedIds.clear();
  // transformers' SequenceBiasLogitsProcessor with single-token sequences.
  const size_t numBias = std::min(p.biasIds.size(), p.biasValues.size());
  for (size_t i = 0; i < numBias; ++i) {
    if (!inVocab(p.biasIds[i], vocab)) continue;
    out->biasIds.push_back(p.biasIds[i]);
    out->biasValues.push_back(p.biasValues[i]);
  }
  // transformers' RepetitionPenaltyLogitsProcessor: each distinct token of prompt + output once.
  if (p.repetitionPenalty != 1.0f && t.numIds > 0) {
    std::vector<int32_t>& ids = out->repetitionIds;
    ids.assign(t.ids, t.ids + t.numIds);
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    ids.erase(std::remove_if(ids.begin(), ids.end(), [vocab](int32_t id) { return !inVocab(id, vocab); }), ids.end());
  }
  // OpenAI's presence/frequency penalties over the generated ids (vLLM's apply_penalties).
  if (p.presencePenalty != 0.0f || p.frequencyPenalty != 0.0f) {
    const int64_t first = std::clamp<int64_t>(t.numPromptIds, 0, t.numIds);
    std::vector<int32_t>& ids = out->countIds;
    ids.assign(t.ids + first, t.ids + t.numIds);
    std::sort(ids.begin(), ids.end());
    size_t kept = 0;
    for (size_t i = 0; i < ids.size();) {
      size_t j = i;
      while (j < ids.size() && ids[j] == ids[i]) ++j;
      if (inVocab(ids[i], vocab)) {
        ids[kept++] = ids[i];
        out->counts.push_back(static_cast<int32_t>(j - i));
      }
      i = j;
    }
    ids.resize(kept);
  }
  banNoRepeatNgram(t, p.noRepeatNgramSize, vocab, out->bannedIds);
  banBadWords(t, p, vocab, out->bannedIds);
  // transformers' MinNewTokensLengthLogitsProcessor: no end id before minTokens generated tokens.
  if (inVocab(p.endId, vocab) && t.numIds - t.numPromptIds < p.minTokens) out->bannedIds.push_back(p.endId);
}

void applySparseControls(float* logits, const SparseControls& c, const SamplingParams& p) {
  for (size_t i = 0; i < c.biasIds.size(); ++i) logits[c.biasIds[i]] += c.biasValues[i];
  // Positive logits divided, negative ones multiplied.
  for (int32_t id : c.repetitionIds) {
    float& s = logits[id];
    s = s < 0.0f ? s * p.repetitionPenalty : s / p.repetitionPenalty;
  }
  // logit -= presence * [count > 0] + frequency * count.
  for (size_t i = 0; i < c.countIds.size(); ++i) {
    logits[c.countIds[i]] -= p.presencePenalty + p.frequencyPenalty * static_cast<float>(c.counts[i]);
  }
  for (int32_t id : c.bannedIds) logits[id] = kMasked;
}

void applyWarpers(float* logits, int64_t vocab, const SamplingParams& p) {
  if (p.temperature == 0.0f) return;  // greedy: the warpers cannot change the argmax
  // Per-thread scratch: sampleRows runs rows on pool threads, and a step must not allocate per row.
  thread_local std::vector<int32_t> ids;
  thread_local std::vector<float> values;
  thread_local std::vector<double> weights;
  applyTemperature(logits, vocab, p.temperature);
  applyTopK(logits, vocab, p.topK, values);
  applyTopP(logits, vocab, p.topP, ids, weights);
  applyMinP(logits, vocab, p.minP, ids, weights);
}

void processLogits(float* logits, int64_t vocab, const SequenceTokens& tokens, const SamplingParams& p) {
  thread_local SparseControls controls;
  collectSparseControls(tokens, p, vocab, &controls);
  applySparseControls(logits, controls, p);
  applyWarpers(logits, vocab, p);
}

}  // namespace kiln::sampling
