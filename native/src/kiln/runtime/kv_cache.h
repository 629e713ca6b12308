#pragma once
// The paged KV cache: a pool of fixed-size blocks (layout in kernels/step.h) and a free list. Sequences
// lease blocks for their lifetime; a lease returns its blocks when it is destroyed, so an error in the
// middle of a generation cannot leak cache capacity.
#include <cstdint>
#include <mutex>
#include <vector>

#include "kiln/kernels/step.h"
#include "kiln/runtime/aligned_buffer.h"

namespace kiln {

class KvBlockPool {
 public:
  // Throws std::runtime_error when the pool cannot be allocated.
  KvBlockPool(int32_t numBlocks, int32_t numLayers, int32_t numKvHeads, int32_t headDim, int32_t tokensPerBlock);

  const KvCacheView& view() const { return view_; }
  int32_t numBlocks() const { return view_.numBlocks; }
  int32_t tokensPerBlock() const { return view_.tokensPerBlock; }
  int32_t numFree() const;

  // Takes `count` blocks off the free list, or throws naming the shortfall.
  std::vector<int32_t> allocate(int32_t count);
  void release(const std::vector<int32_t>& blocks);

  static uint64_t bytesFor(int64_t numBlocks, int64_t numLayers, int64_t numKvHeads, int64_t headDim,
                           int64_t tokensPerBlock);

 private:
  AlignedBuffer memory_;
  KvCacheView view_;
  mutable std::mutex mutex_;
  std::vector<int32_t> free_;
};

// One sequence's blocks, given back on destruction.
class BlockLease {
 public:
  BlockLease(KvBlockPool& pool, int32_t count) : pool_(pool), blocks_(pool.allocate(count)) {}
  ~BlockLease() { pool_.release(blocks_); }
  BlockLease(const BlockLease&) = delete;
  BlockLease& operator=(const BlockLease&) = delete;
  const std::vector<int32_t>& blocks() const { return blocks_; }

 private:
  KvBlockPool& pool_;
  std::vector<int32_t> blocks_;
};

}  // namespace kiln
