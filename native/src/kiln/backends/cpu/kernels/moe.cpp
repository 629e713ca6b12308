// Sparse mixture of SwiGLU experts (Mixtral). Routing is computed per token in float32; the expert MLPs
// run as ordinary linear kernels over the tokens routed to each expert, gathered into contiguous rows,
// so an expert's weights are streamed once per call however many of the step's tokens chose it.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kiln/backends/cpu/kernels/kernels.h"

namespace kiln {

void moeKernel(const KernelEnv& env, const float* x, int64_t T, int64_t xStride, const void* router, DType routerDt,
               const void* gate, const void* up, const void* down, DType expertDt, int64_t numExperts,
               int64_t hidden, int64_t intermediate, int64_t topK, bool normalizeTopK, float* out,
               int64_t outStride) {
  const int64_t E = numExperts, H = hidden, I = intermediate;
  if (T <= 0 || E <= 0 || H <= 0 || topK <= 0) return;
  topK = std::min(topK, E);

  // 1. Router logits [T, E] and their softmax, in float32.
  std::vector<float> probs(static_cast<size_t>(T * E));
  linearKernel(env, x, T, xStride, router, routerDt, E, H, nullptr, probs.data(), E);
  // 2. Per token, the topK experts: repeatedly the largest remaining probability, the lowest index on
  //    ties (strict > while scanning upwards), as torch.topk returns them.
  std::vector<std::vector<std::pair<int64_t, float>>> routed(static_cast<size_t>(E));  // expert -> (token, weight)
  std::vector<char> taken(static_cast<size_t>(E));
  std::vector<int64_t> picks(static_cast<size_t>(topK));
  for (int64_t t = 0; t < T; ++t) {
    float* p = probs.data() + t * E;
    float maxLogit = -INFINITY;
    for (int64_t e = 0; e < E; ++e) maxLogit = std::max(maxLogit, p[e]);
    float sum = 0.0f;
    for (int64_t e = 0; e < E; ++e) {
      p[e] = std::exp(p[e] - maxLogit);
      sum += p[e];
    }
    for (int64_t e = 0; e < E; ++e) p[e] /= sum;
    std::fill(taken.begin(), taken.end(), 0);
    float keptSum = 0.0f;
    for (int64_t k = 0; k < topK; ++k) {
      int64_t best = -1;
      for (int64_t e = 0; e < E; ++e) {
        if (!taken[e] && (best < 0 || p[e] > p[best])) best = e;
      }
      taken[best] = 1;
      picks[k] = best;
      keptSum += p[best];
    }
    for (int64_t k = 0; k < topK; ++k) {
      const float w = normalizeTopK ? p[picks[k]] / keptSum : p[picks[k]];
      routed[picks[k]].emplace_back(t, w);
    }
  }

  // 3. Each expert over its tokens; results are accumulated in float32 in expert order (as transformers'
  //    index_add_ loop), then written to out (which therefore may alias x).
  const int64_t wordSize = static_cast<int64_t>(dtypeSize(expertDt));
  std::vector<float> acc(static_cast<size_t>(T * H), 0.0f);
  std::vector<float> xs, g, u, d;
  for (int64_t e = 0; e < E; ++e) {
    const auto& tokens = routed[e];
    const int64_t n = static_cast<int64_t>(tokens.size());
    if (n == 0) continue;
    xs.resize(static_cast<size_t>(n * H));
    g.resize(static_cast<size_t>(n * I));
    u.resize(static_cast<size_t>(n * I));
    d.resize(static_cast<size_t>(n * H));
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(xs.data() + i * H, x + tokens[i].first * xStride, static_cast<size_t>(H) * sizeof(float));
    }
    const char* gateE = static_cast<const char*>(gate) + e * I * H * wordSize;
    const char* upE = static_cast<const char*>(up) + e * I * H * wordSize;
    const char* downE = static_cast<const char*>(down) + e * H * I * wordSize;
    linearKernel(env, xs.data(), n, H, gateE, expertDt, I, H, nullptr, g.data(), I);
    linearKernel(env, xs.data(), n, H, upE, expertDt, I, H, nullptr, u.data(), I);
    swigluKernel(env, g.data(), I, u.data(), I, n, I, g.data(), I);
    linearKernel(env, g.data(), n, I, downE, expertDt, H, I, nullptr, d.data(), H);
    for (int64_t i = 0; i < n; ++i) {
      const float w = tokens[i].second;
      float* a = acc.data() + tokens[i].first * H;
      const float* di = d.data() + i * H;
      for (int64_t c = 0; c < H; ++c) a[c] += w * di[c];
    }
  }
  for (int64_t t = 0; t < T; ++t) {
    std::memcpy(out + t * outStride, acc.data() + t * H, static_cast<size_t>(H) * sizeof(float));
  }
}

}  // namespace kiln
