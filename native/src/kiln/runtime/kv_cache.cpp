#include "kiln/runtime/kv_cache.h"

#include <cstring>
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
}

void KvBlockPool::copyBlock(int32_t src, int32_t dst) {
  if (src == dst) return;
  // A block is contiguous: numLayers x {K, V} x tokensPerBlock rows (runtime/step.h).
  const size_t floats = static_cast<size_t>(view_.numLayers) * 2 * view_.tokensPerBlock * view_.numKvHeads * view_.headDim;
  std::memcpy(view_.pool + static_cast<size_t>(dst) * floats, view_.pool + static_cast<size_t>(src) * floats,
              floats * sizeof(float));
}

}  // namespace kiln
