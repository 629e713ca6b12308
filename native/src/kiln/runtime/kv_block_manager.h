#pragma once
// Bookkeeping of the paged KV cache's blocks (the memory itself is KvBlockPool): reference counts, the
// free list, and the prefix cache. A block whose every position holds computed KV can be "committed"
// under a hash of (the hash of the blocks before it, its own tokens); a later sequence whose prompt
// starts with the same tokens then reuses it instead of recomputing it. Committed blocks nobody
// references stay cached, and are evicted least recently used first when the free list runs dry.
// Used by the executor's thread only: no locking.
#include <cstdint>
#include <list>
#include <unordered_map>
#include <vector>

namespace kiln {

// The chained hash of one full block: mixes the previous block's hash with this block's tokens.
uint64_t hashKvBlock(uint64_t previous, const int32_t* tokens, int32_t count);

class KvBlockManager {
 public:
  KvBlockManager(int32_t numBlocks, int32_t tokensPerBlock, bool enableReuse);

  int32_t numBlocks() const { return static_cast<int32_t>(blocks_.size()); }
  int32_t tokensPerBlock() const { return tokensPerBlock_; }
  // Blocks a sequence could get now: never used, plus cached ones nobody references.
  int32_t numAvailable() const { return static_cast<int32_t>(free_.size() + lru_.size()); }
  // Cached blocks nobody references (a part of numAvailable).
  int32_t numCachedFree() const { return static_cast<int32_t>(lru_.size()); }
  int32_t numUsed() const { return numBlocks() - numAvailable(); }
  bool reuseEnabled() const { return enableReuse_; }

  // Appends `count` blocks (each with one reference) to *out; false, taking nothing, when fewer are available.
  bool allocate(int32_t count, std::vector<int32_t>* out);
  // References of a block (0: free or cached). A block with more than one is shared: whoever writes
  // into it must copy it first (copy-on-write, as beams forking from one parent).
  int32_t refs(int32_t block) const { return blocks_[block].refs; }
  // Adds one reference to a block that already has one (a forked beam sharing its parent's blocks).
  void addRef(int32_t block);
  // Drops one reference of each block, last block first: its cached leaves are evicted before its roots.
  void release(const std::vector<int32_t>& blocks);
  // Appends to *out (with a reference each) the longest run of cached blocks matching hashes[0..count),
  // their tokens checked too (tokens holds count * tokensPerBlock ids); returns how many matched.
  int32_t match(const uint64_t* hashes, const int32_t* tokens, int32_t count, std::vector<int32_t>* out);
  // Offers a full, computed block to the prefix cache. A block with the same content already cached
  // wins; this one then stays private and returns to the free list when released.
  void commit(int32_t block, uint64_t hash, const int32_t* tokens);

 private:
  struct Block {
    int32_t refs = 0;
    bool cached = false;  // registered in byHash_
    uint64_t hash = 0;
    std::vector<int32_t> tokens;  // its tokens while cached, to rule out hash collisions
    std::list<int32_t>::iterator lruPos;
    bool inLru = false;
  };
  int32_t takeOne();

  int32_t tokensPerBlock_;
  bool enableReuse_;
  std::vector<Block> blocks_;
  std::vector<int32_t> free_;  // never-cached blocks; the back is handed out next
  std::list<int32_t> lru_;     // cached blocks with no reference, least recently used first
  std::unordered_map<uint64_t, int32_t> byHash_;
};

}  // namespace kiln
