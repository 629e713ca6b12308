#pragma once
// The device's view of one step (runtime/step.h's StepContext, uploaded in one copy) and of the paged
// KV cache. Plain structs passed to kernels by value.
#include <cstdint>

namespace kiln {
namespace cuda {

struct DeviceStep {
  int32_t numTokens = 0;
  int32_t numSeqs = 0;
  int32_t numLogitRows = 0;
  int32_t blockTableStride = 0;  // entries per row of blockTables
  const int32_t* tokenIds = nullptr;   // [numTokens]
  const int32_t* positions = nullptr;  // [numTokens]
  const int32_t* tokenSeq = nullptr;   // [numTokens]
  const int32_t* logitRows = nullptr;  // [numLogitRows]
  const int32_t* blockTables = nullptr;  // [numSeqs, blockTableStride]
  // The tokens cut into query tiles of at most kQueryTile consecutive tokens of one sequence at
  // consecutive positions, as (first token, count) pairs (tiled attention).
  int32_t numTiles = 0;
  const int32_t* tiles = nullptr;  // [numTiles, 2]
};

constexpr int32_t kQueryTile = 64;

// Same layout as the CPU's KvCacheView (runtime/step.h), elements of the activation dtype: block b,
// layer l, K (0) or V (1), slot s at pool + ((b * numLayers + l) * 2 + kv) * blockStride + s * rowSize.
struct DeviceKv {
  void* pool = nullptr;
  int32_t numLayers = 0;
  int32_t numKvHeads = 0;
  int32_t headDim = 0;
  int32_t tokensPerBlock = 0;
};

}  // namespace cuda
}  // namespace kiln
