// MoE routing and the weighted accumulation of the experts' outputs (the expert MLPs themselves are
// cuBLASLt GEMMs driven by ops/moe.cpp).
#include "kiln/backends/cuda/kernels/common.cuh"
#include "kiln/backends/cuda/kernels/kernels.h"

namespace kiln {
namespace cuda {

namespace {

constexpr int kMaxExperts = 256;

// One block per token: router logits (one warp per expert at a time), softmax, topK by repeated
// arg-max with ties to the lower index (torch.topk's order), dense weights out.
template <typename T>
__global__ void routeKernel(const T* x, int64_t xStride, const T* router, int64_t E, int64_t H, int64_t topK,
                            bool normalizeTopK, float* weights) {
  __shared__ float probs[kMaxExperts];
  const int64_t t = blockIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const T* xt = x + t * xStride;
  for (int64_t e = warp; e < E; e += warps) {
    const T* we = router + e * H;
    float dot = 0.0f;
    for (int64_t i = lane; i < H; i += 32) dot += toF(xt[i]) * toF(we[i]);
    dot = warpSum(dot);
    if (lane == 0) probs[e] = dot;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float maxLogit = -INFINITY;
    for (int64_t e = 0; e < E; ++e) maxLogit = fmaxf(maxLogit, probs[e]);
    float sum = 0.0f;
    for (int64_t e = 0; e < E; ++e) {
      probs[e] = expf(probs[e] - maxLogit);
      sum += probs[e];
    }
    for (int64_t e = 0; e < E; ++e) probs[e] /= sum;
    float* wt = weights + t * E;
    for (int64_t e = 0; e < E; ++e) wt[e] = 0.0f;
    // Kept experts are marked by a negative weight while choosing, then made positive.
    float keptSum = 0.0f;
    for (int64_t k = 0; k < topK; ++k) {
      int64_t best = -1;
      for (int64_t e = 0; e < E; ++e) {
        if (wt[e] == 0.0f && (best < 0 || probs[e] > probs[best])) best = e;
      }
      wt[best] = -1.0f;
      keptSum += probs[best];
    }
    for (int64_t e = 0; e < E; ++e) {
      if (wt[e] != 0.0f) wt[e] = normalizeTopK ? probs[e] / keptSum : probs[e];
    }
  }
}

template <typename T>
__global__ void accumulateKernel(const T* d, int64_t H, const float* weights, int64_t E, int64_t expert, float* acc) {
  const int64_t t = blockIdx.x;
  const float w = weights[t * E + expert];
  if (w == 0.0f) return;  // not routed here: d may hold anything for this token
  for (int64_t c = threadIdx.x; c < H; c += blockDim.x) acc[t * H + c] += w * toF(d[t * H + c]);
}

}  // namespace

void moeRoute(cudaStream_t stream, DType t, const void* x, int64_t T_, int64_t xStride, const void* router,
              int64_t numExperts, int64_t hidden, int64_t topK, bool normalizeTopK, float* weights) {
  if (T_ <= 0) return;
  if (numExperts > kMaxExperts) throw std::runtime_error("cuda moe: more than 256 experts");
  dispatch(t, [&](auto z) {
    using T = decltype(z);
    routeKernel<T><<<static_cast<unsigned>(T_), 256, 0, stream>>>(static_cast<const T*>(x), xStride,
                                                                   static_cast<const T*>(router), numExperts, hidden,
                                                                   topK, normalizeTopK, weights);
  });
}

void moeAccumulate(cudaStream_t stream, DType t, const void* d, int64_t T_, int64_t H, const float* weights,
                   int64_t numExperts, int64_t expert, float* acc) {
  if (T_ <= 0) return;
  dispatch(t, [&](auto z) {
    using T = decltype(z);
    accumulateKernel<T><<<static_cast<unsigned>(T_), 256, 0, stream>>>(static_cast<const T*>(d), H, weights, numExperts,
                                                                       expert, acc);
  });
}

}  // namespace cuda
}  // namespace kiln
