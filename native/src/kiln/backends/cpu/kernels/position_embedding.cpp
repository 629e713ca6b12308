// Learned absolute position embeddings (GPT-2, OPT, BigCode): rows of a table picked by position.
#include <algorithm>

#include "kiln/backends/cpu/kernels/kernels.h"
#include "kiln/backends/cpu/kernels/portable.h"

namespace kiln {

namespace {
}

int64_t positionEmbeddingKernel(const KernelEnv& env, const int32_t* positions, int64_t numTokens, int64_t offset,
                                const void* table, DType dt, int64_t tableRows, int64_t hidden, float* out,
                                int64_t outStride) {
  // All rows are checked before any is written: a step that fails leaves out untouched.
  for (int64_t t = 0; t < numTokens; ++t) {
    const int64_t row = static_cast<int64_t>(positions[t]) + offset;
    if (row < 0 || row >= tableRows) return t;
  }
  if (numTokens <= 0 || hidden <= 0) return -1;
  const int64_t rowBytes = hidden * static_cast<int64_t>(dtypeSize(dt));
  auto body = [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t row = static_cast<int64_t>(positions[t]) + offset;
      portable::toF32(static_cast<const char*>(table) + row * rowBytes, dt, hidden, out + t * outStride);
    }
  };
  portable::parallelItems(env, numTokens, hidden, body);
  return -1;
}

}  // namespace kiln
