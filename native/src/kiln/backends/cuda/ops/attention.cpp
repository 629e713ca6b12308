// attention: the step's K/V into the device KV cache, then paged attention over the block tables; and
// gather_rows, which picks the LM head's rows.
#include <algorithm>
#include <climits>
#include <cstdlib>

#include "kiln/backends/cuda/ops/ops.h"

namespace kiln {
namespace cuda {
namespace ops {

BoundOp bindAttention(OpBinding& b) {
  const spec::Attention s = spec::attention(b);
  if (s.headDim > 512) b.fail("headDim above 512 is not supported by the cuda attention kernel");
  CudaBackend* be = &backendOf(b);
  const Matrix q = be->value(s.q);
  const Matrix k = be->value(s.k);
  const Matrix v = be->value(s.v);
  const Matrix out = be->value(s.out);
  // Split-K for decode steps of a few sequences (kernels.h: AttentionSplit): partials in the scratch
  // (used within the call only), tickets in counters that every layer shares (kernels run one at a time).
  // KILN_CUDA_ATTENTION_SPLIT_KEYS (read when the engine loads) sets the fewest keys a split takes
  // (default 256; 0 turns it off).
  const int64_t minKeys = [] {
    const char* setting = std::getenv("KILN_CUDA_ATTENTION_SPLIT_KEYS");
    return setting ? std::max<int64_t>(0, std::atoll(setting)) : int64_t{256};
  }();
  const int64_t partialSlots = attentionSplitPartials(be->multiProcessors());
  const int64_t counterSlots = attentionSplitCounters(be->multiProcessors());
  unsigned* counters = nullptr;
  if (minKeys > 0) {
    be->reserveScratch(static_cast<size_t>(partialSlots * (s.headDim + 2)) * sizeof(float));
    counters = be->deviceCounters("attention.splitCounters", static_cast<size_t>(counterSlots));
  }
  return [=](const StepRuntime& rt) {
    const DeviceStep& step = deviceStep(rt);
    AttentionSplit split;
    if (minKeys > 0 && step.numTokens == step.numSeqs) {
      const int64_t blocksPerToken =
          decodeGroupedByKvHead(step.numTokens, be->kvDType(), s.headDim, s.numHeads / s.numKvHeads, s.softcap, s.alibiSlopes)
              ? s.numKvHeads
              : s.numHeads;
      split.splits = attentionSplits(step.numTokens, blocksPerToken, be->multiProcessors());
      // Only while the rows' partials and tickets fit the room reserved (splits > 1 needs few rows).
      if (split.splits > 1 && int64_t{step.numTokens} * s.numHeads * split.splits <= partialSlots &&
          int64_t{step.numTokens} * blocksPerToken <= counterSlots) {
        split.partials = static_cast<float*>(be->scratch());
        split.counters = counters;
        split.minKeys = static_cast<int32_t>(std::min<int64_t>(minKeys, INT32_MAX));
      } else {
        split.splits = 1;
      }
    }
    attention(be->stream(), be->kvDType(), step, be->kv(), s.layer, q, k, v, s.numHeads, s.numKvHeads, s.headDim,
              s.scale, s.slidingWindow, s.softcap, s.alibiSlopes, out, split, !s.kvStored);
  };
}

BoundOp bindGatherRows(OpBinding& b) {
  const spec::GatherRows s = spec::gatherRows(b);
  CudaBackend* be = &backendOf(b);
  const Matrix x = be->value(s.x);
  const Matrix y = be->value(s.y);
  return [=](const StepRuntime& rt) {
    gatherRows(be->stream(), x, deviceStep(rt).logitRows, rt.step->numLogitRows, s.x.cols, y);
  };
}

}  // namespace ops
}  // namespace cuda
}  // namespace kiln
