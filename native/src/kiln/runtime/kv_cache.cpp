#include "kiln/runtime/kv_cache.h"

#include <stdexcept>
#include <string>

namespace kiln {

uint64_t KvBlockPool::bytesFor(int64_t numBlocks, int64_t numLayers, int64_t numKvHeads, int64_t headDim,
                               int64_t tokensPerBlock) {
  // All factors are bounded by the header validation, so this cannot overflow 64 bits.
  return static_cast<uint64_t>(numBlocks) * numLayers * 2 * tokensPerBlock * numKvHeads * headDim * sizeof(float);
}

KvBlockPool::KvBlockPool(int32_t numBlocks, int32_t numLayers, int32_t numKvHeads, int32_t headDim,
                         int32_t tokensPerBlock) {
  const uint64_t bytes = bytesFor(numBlocks, numLayers, numKvHeads, headDim, tokensPerBlock);
  try {
    memory_ = AlignedBuffer(bytes);
  } catch (const std::bad_alloc&) {
    throw std::runtime_error("cannot allocate the KV cache: " + std::to_string(numBlocks) + " blocks of " +
                             std::to_string(tokensPerBlock) + " tokens need " + std::to_string(bytes) +
                             " bytes (lower kvCacheTokens)");
  }
  view_.pool = static_cast<float*>(memory_.data());
  view_.numBlocks = numBlocks;
  view_.numLayers = numLayers;
  view_.numKvHeads = numKvHeads;
  view_.headDim = headDim;
  view_.tokensPerBlock = tokensPerBlock;
  // Handed out lowest id first (the back of the vector is the next block).
  free_.reserve(numBlocks);
  for (int32_t b = numBlocks - 1; b >= 0; --b) free_.push_back(b);
}

int32_t KvBlockPool::numFree() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int32_t>(free_.size());
}

std::vector<int32_t> KvBlockPool::allocate(int32_t count) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (count < 0 || static_cast<size_t>(count) > free_.size()) {
    throw std::runtime_error("the KV cache has " + std::to_string(free_.size()) + " free blocks of " +
                             std::to_string(view_.tokensPerBlock) + " tokens (" + std::to_string(view_.numBlocks) +
                             " in all) but this request needs " + std::to_string(count) +
                             " (raise kvCacheTokens)");
  }
  std::vector<int32_t> out(free_.end() - count, free_.end());
  free_.resize(free_.size() - count);
  return out;
}

void KvBlockPool::release(const std::vector<int32_t>& blocks) {
  std::lock_guard<std::mutex> lock(mutex_);
  free_.insert(free_.end(), blocks.rbegin(), blocks.rend());
}

}  // namespace kiln
