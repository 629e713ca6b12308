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
__global__ void routeKernel(ConstMatrix x, const void* router, DType routerDType, int64_t E, int64_t H, int64_t topK,
                            bool normalizeTopK, float* weights) {
  startAfterPriorKernels();
  __shared__ float probs[kMaxExperts];
  const int64_t t = blockIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int64_t xt = t * x.stride;
  for (int64_t e = warp; e < E; e += warps) {
    float dot = 0.0f;
    for (int64_t i = lane; i < H; i += 32) dot += load(x.data, x.dtype, xt + i) * load(router, routerDType, e * H + i);
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

__global__ void accumulateKernel(ConstMatrix d, int64_t H, const float* weights, int64_t E, int64_t expert, float* acc) {
  startAfterPriorKernels();
  const int64_t t = blockIdx.x;
  const float w = weights[t * E + expert];
  if (w == 0.0f) return;  // not routed here: d may hold anything for this token
  for (int64_t c = threadIdx.x; c < H; c += blockDim.x) acc[t * H + c] += w * load(d.data, d.dtype, t * d.stride + c);
}

}  // namespace

void moeRoute(cudaStream_t stream, ConstMatrix x, int64_t T, const void* router, DType routerDType,
              int64_t numExperts, int64_t hidden, int64_t topK, bool normalizeTopK, float* weights) {
  if (T <= 0) return;
  if (numExperts > kMaxExperts) throw std::runtime_error("cuda moe: more than 256 experts");
  launch(routeKernel, dim3(static_cast<unsigned>(T)), dim3(256), 0, stream, x, router, routerDType, numExperts, hidden, topK, normalizeTopK, weights);
}

void moeAccumulate(cudaStream_t stream, ConstMatrix d, int64_t T, int64_t H, const float* weights, int64_t numExperts,
                   int64_t expert, float* acc) {
  if (T <= 0) return;
  launch(accumulateKernel, dim3(static_cast<unsigned>(T)), dim3(256), 0, stream, d, H, weights, numExperts, expert, acc);
}

}  // namespace cuda
}  // namespace kiln
