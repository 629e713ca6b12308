#include <algorithm>

#include "kiln/backends/cpu/kernels/kernels.h"
#include "kiln/backends/cpu/kernels/portable.h"

namespace kiln {

namespace {
}

void embeddingKernel(const KernelEnv& env, const int32_t* ids, int64_t numTokens, const void* table, DType dt,
                     int64_t hidden, float scale, float* out, int64_t outStride) {
  if (numTokens <= 0 || hidden <= 0) return;
  const int64_t rowBytes = hidden * static_cast<int64_t>(dtypeSize(dt));
  auto body = [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      float* o = out + t * outStride;
      portable::toF32(static_cast<const char*>(table) + ids[t] * rowBytes, dt, hidden, o);
      // Gemma scales by sqrt(hidden); skipping the multiply keeps other models' rows bit-exact copies.
      if (scale != 1.0f) {
        for (int64_t i = 0; i < hidden; ++i) o[i] *= scale;
      }
    }
  };
  portable::parallelItems(env, numTokens, hidden, body);
}

}  // namespace kiln
