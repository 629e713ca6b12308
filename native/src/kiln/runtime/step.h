#pragma once
// What one forward step of the runtime feeds the kernels besides activations: the packed tokens of
// several sequences (no padding), their positions, and the paged KV cache.
#include <cstdint>

namespace kiln {

// The KV cache is a pool of fixed-size blocks. Block b holds, for every layer l and for K then V,
// `tokensPerBlock` rows of [numKvHeads * headDim] floats:
//   K of (block b, layer l, slot s) = pool + ((b * numLayers + l) * 2 + 0) * blockStride + s * numKvHeads * headDim
//   V of (block b, layer l, slot s) = pool + ((b * numLayers + l) * 2 + 1) * blockStride + s * numKvHeads * headDim
// with blockStride = tokensPerBlock * numKvHeads * headDim. A sequence's token at position p lives in
// block blockTable[p / tokensPerBlock], slot p % tokensPerBlock.
struct KvCacheView {
  float* pool = nullptr;
  int32_t numBlocks = 0;
  int32_t numLayers = 0;
  int32_t numKvHeads = 0;
  int32_t headDim = 0;
  int32_t tokensPerBlock = 0;
};

struct StepContext {
  int32_t numTokens = 0;             // packed tokens this step (T)
  const int32_t* tokenIds = nullptr;  // [T]
  const int32_t* positions = nullptr; // [T] position of each token in its sequence
  const int32_t* tokenSeq = nullptr;  // [T] index (0..numSeqs-1) of each token's sequence
  int32_t numSeqs = 0;
  const int32_t* const* blockTables = nullptr;  // [numSeqs] each sequence's block ids
  int32_t numLogitRows = 0;           // rows gathered for the LM head (R)
  const int32_t* logitRows = nullptr; // [R] token indices into 0..T-1
  KvCacheView kv;
};

}  // namespace kiln
