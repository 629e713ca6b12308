#pragma once
// The order in which a decode (one-row) kernel visits its thread's range of weight rows [n0, n1): four
// sequential streams a quarter of the range apart, one row of each per step, so the hardware prefetcher
// follows four long sequential reads instead of many short ones (on the 2-core Zen 5 machine: int4 1.8x,
// int8 1.2-1.4x, bfloat16 1.1x the bytes a second of tiles of adjacent rows; two or eight streams, or one,
// were slower: docs/benchmarks.md). Used by linear_avx512.cpp, linear_avx512_bf16.cpp and
// linear_int4_avx512_bf16.cpp; internal linkage, as those files are built for different instruction sets.
#include <cstdint>

namespace kiln {
namespace {

// Quarters of at least this many rows are streamed side by side; a shorter range is one stream.
constexpr int64_t kMinStreamRows = 64;

// four(at) for each step's rows at[0..3] (one per quarter), then one(n) for each row left over.
template <typename Four, typename One>
inline void forEachStreamedRow(int64_t n0, int64_t n1, const Four& four, const One& one) {
  const int64_t quarter = (n1 - n0) / 4 >= kMinStreamRows ? (n1 - n0) / 4 : 0;
  for (int64_t i = 0; i < quarter; ++i) {
    const int64_t at[4] = {n0 + i, n0 + quarter + i, n0 + 2 * quarter + i, n0 + 3 * quarter + i};
    four(at);
  }
  for (int64_t n = n0 + 4 * quarter; n < n1; ++n) one(n);
}

}  // namespace
}  // namespace kiln
