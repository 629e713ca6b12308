#include <algorithm>
#include <cmath>
#include <vector>

#include "kiln/backends/cpu/kernels/avx2.h"
#include "kiln/backends/cpu/kernels/kernels.h"
#include "kiln/backends/cpu/kernels/portable.h"

namespace kiln {

namespace {


void rmsNormRowsGeneric(const float* x, int64_t xStride, int64_t r0, int64_t r1, const void* w, DType wdt,
                        int64_t H, float eps, float weightOffset, float* y, int64_t yStride) {
  thread_local std::vector<float> scaleBuf;
  if (static_cast<int64_t>(scaleBuf.size()) < H) scaleBuf.resize(static_cast<size_t>(H));
  portable::toF32(w, wdt, H, scaleBuf.data());
  for (int64_t i = 0; i < H; ++i) scaleBuf[i] += weightOffset;
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * xStride;
    float* yr = y + r * yStride;
    double sumSq = 0.0;  // float64: the mean is then the float32-rounded exact value
    for (int64_t i = 0; i < H; ++i) sumSq += static_cast<double>(xr[i]) * xr[i];
    const float mean = static_cast<float>(sumSq / static_cast<double>(H));
    const float inv = 1.0f / std::sqrt(mean + eps);
    // Read all of x before writing y so that in-place (y == x) works.
    for (int64_t i = 0; i < H; ++i) yr[i] = (xr[i] * inv) * scaleBuf[i];
  }
}

}  // namespace

void rmsNormKernel(const KernelEnv& env, const float* x, int64_t rows, int64_t xStride, const void* w, DType wdt,
                   int64_t H, float eps, float weightOffset, float* y, int64_t yStride) {
  if (rows <= 0 || H <= 0) return;
  const bool avx = env.isa >= Isa::Avx2 && wdt != DType::I32;
  auto body = [&](int64_t r0, int64_t r1) {
    if (avx) {
      avx2::rmsNormRows(x, xStride, r0, r1, w, wdt, H, eps, weightOffset, y, yStride);
    } else {
      rmsNormRowsGeneric(x, xStride, r0, r1, w, wdt, H, eps, weightOffset, y, yStride);
    }
  };
  portable::parallelItems(env, rows, H, body);
}

void rmsNormGroupsKernel(const KernelEnv& env, const float* x, int64_t rows, int64_t xStride, const void* w,
                         DType wdt, int64_t numGroups, int64_t groupSize, float eps, float weightOffset, float* y,
                         int64_t yStride) {
  if (numGroups == 1) return rmsNormKernel(env, x, rows, xStride, w, wdt, groupSize, eps, weightOffset, y, yStride);
  if (rows <= 0 || numGroups <= 0 || groupSize <= 0) return;
  const bool avx = env.isa >= Isa::Avx2 && wdt != DType::I32;
  // One task per (row, group): the row bodies take a row range, so each task is one row of one group
  // seen as a [1, groupSize] matrix.
  auto body = [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t r = task / numGroups;
      const int64_t g = task % numGroups;
      const float* xg = x + r * xStride + g * groupSize;
      float* yg = y + r * yStride + g * groupSize;
      if (avx) {
        avx2::rmsNormRows(xg, xStride, 0, 1, w, wdt, groupSize, eps, weightOffset, yg, yStride);
      } else {
        rmsNormRowsGeneric(xg, xStride, 0, 1, w, wdt, groupSize, eps, weightOffset, yg, yStride);
      }
    }
  };
  const int64_t tasks = rows * numGroups;
  portable::parallelItems(env, tasks, groupSize, body);
}

}  // namespace kiln
