#pragma once
// The paged KV cache's memory: a pool of fixed-size blocks (layout in runtime/step.h). Which sequence
// holds which block is the business of KvBlockManager (kv_block_manager.h), driven by the executor.
#include <cstdint>
#include <vector>

#include "kiln/runtime/step.h"
#include "kiln/runtime/aligned_buffer.h"

namespace kiln {

class KvBlockPool {
 public:
  // Throws std::runtime_error when the pool cannot be allocated.
  KvBlockPool(int32_t numBlocks, int32_t numLayers, int32_t numKvHeads, int32_t headDim, int32_t tokensPerBlock);

  const KvCacheView& view() const { return view_; }
  int32_t numBlocks() const { return view_.numBlocks; }
  int32_t tokensPerBlock() const { return view_.tokensPerBlock; }
  // Copies every layer's K and V of block `src` into block `dst` (a beam forking a partial block).
  void copyBlock(int32_t src, int32_t dst);

  static uint64_t bytesFor(int64_t numBlocks, int64_t numLayers, int64_t numKvHeads, int64_t headDim,
                           int64_t tokensPerBlock);

 private:
  AlignedBuffer memory_;
  KvCacheView view_;
};

}  // namespace kiln
