// rope: rotary position embedding at the step's positions (device copy). The cos/sin of every position
// below maxSeqLen are computed here once, on the host, with the kernel's own formula, and shared by
// every rope op with the same frequencies (each layer's q and k).
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kiln/backends/cuda/ops/ops.h"

namespace kiln {
namespace cuda {
namespace ops {

namespace {

constexpr int64_t kMaxTableBytes = 64ll << 20;  // longer contexts compute cos/sin in the kernel

// [positions][half] pairs (cos, sin) × attentionScaling, as ropeKernel computes them.
std::vector<float> cosSinTable(const float* invFreq, int64_t half, int64_t positions, float attentionScaling) {
  std::vector<float> table(static_cast<size_t>(positions * half * 2));
  for (int64_t p = 0; p < positions; ++p) {
    const float pos = static_cast<float>(p);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = pos * invFreq[i];
      table[static_cast<size_t>((p * half + i) * 2)] = static_cast<float>(std::cos(static_cast<double>(angle))) * attentionScaling;
      table[static_cast<size_t>((p * half + i) * 2 + 1)] = static_cast<float>(std::sin(static_cast<double>(angle))) * attentionScaling;
    }
  }
  return table;
}

}  // namespace

RopeTable ropeTable(OpBinding& b, const float* invFreq, int64_t half, float attentionScaling) {
  CudaBackend* be = &backendOf(b);
  const int64_t positions = b.facts().maxSeqLen;
  if (positions <= 0 || positions * half * 2 * static_cast<int64_t>(sizeof(float)) > kMaxTableBytes) return {};
  const float* hostInvFreq = static_cast<const float*>(be->hostWeight(invFreq));
  // The key: the frequencies' bytes, the scaling and the length.
  std::string key = "rope:" + std::to_string(positions) + ":" + std::to_string(half) + ":";
  key.append(reinterpret_cast<const char*>(&attentionScaling), sizeof(float));
  key.append(reinterpret_cast<const char*>(hostInvFreq), static_cast<size_t>(half) * sizeof(float));
  const float* cosSin = be->hasTable(key) ? be->table(key) : be->deviceTable(key, cosSinTable(hostInvFreq, half, positions, attentionScaling));
  return {cosSin, positions};
}

BoundOp bindRope(OpBinding& b) {
  const spec::Rope s = spec::rope(b);
  CudaBackend* be = &backendOf(b);
  const Matrix x = be->value(s.x);
  const Matrix y = be->value(s.y);
  const RopeTable table = ropeTable(b, s.invFreq, s.rotaryDim / 2, s.attentionScaling);
  return [=](const StepRuntime& rt) {
    rope(be->stream(), x, rt.step->numTokens, deviceStep(rt).positions, s.numHeads, s.headDim, s.rotaryDim,
         s.interleaved, s.invFreq, s.attentionScaling, table.cosSin, table.positions, y);
  };
}

}  // namespace ops
}  // namespace cuda
}  // namespace kiln
