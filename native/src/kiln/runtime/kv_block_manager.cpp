#include "kiln/runtime/kv_block_manager.h"

#include <algorithm>
#include <stdexcept>

namespace kiln {

namespace {
// splitmix64's finalizer: a cheap, well-mixed 64-bit permutation.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
}  // namespace

uint64_t hashKvBlock(uint64_t previous, const int32_t* tokens, int32_t count) {
  uint64_t h = mix(previous ^ 0x6b696c6e6b76ull);  // "kilnkv": the root differs from a zero hash
  for (int32_t i = 0; i < count; ++i) h = mix(h ^ static_cast<uint32_t>(tokens[i]));
  return h;
}

KvBlockManager::KvBlockManager(int32_t numBlocks, int32_t tokensPerBlock, bool enableReuse)
    : tokensPerBlock_(tokensPerBlock), enableReuse_(enableReuse), blocks_(static_cast<size_t>(numBlocks)) {
  free_.reserve(static_cast<size_t>(numBlocks));
  for (int32_t b = numBlocks - 1; b >= 0; --b) free_.push_back(b);  // lowest id handed out first
}

int32_t KvBlockManager::takeOne() {
  if (!free_.empty()) {
    const int32_t b = free_.back();
    free_.pop_back();
    return b;
  }
  // Evict the least recently used cached block: its KV is about to be overwritten.
  const int32_t b = lru_.front();
  lru_.pop_front();
  Block& block = blocks_[b];
  block.inLru = false;
  byHash_.erase(block.hash);
  block.cached = false;
  block.tokens.clear();
  return b;
}

bool KvBlockManager::allocate(int32_t count, std::vector<int32_t>* out) {
  if (count < 0 || count > numAvailable()) return false;
  for (int32_t i = 0; i < count; ++i) {
    const int32_t b = takeOne();
    blocks_[b].refs = 1;
    out->push_back(b);
  }
  return true;
}

void KvBlockManager::addRef(int32_t block) {
  Block& b = blocks_[block];
  if (b.refs <= 0) throw std::logic_error("KV block " + std::to_string(block) + " shared while free");
  ++b.refs;
}

void KvBlockManager::release(const std::vector<int32_t>& blocks) {
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) {
    Block& block = blocks_[*it];
    if (block.refs <= 0) throw std::logic_error("KV block " + std::to_string(*it) + " released twice");
    if (--block.refs > 0) continue;
    if (block.cached) {
      block.lruPos = lru_.insert(lru_.end(), *it);
      block.inLru = true;
    } else {
      free_.push_back(*it);
    }
  }
}

int32_t KvBlockManager::match(const uint64_t* hashes, const int32_t* tokens, int32_t count, std::vector<int32_t>* out) {
  if (!enableReuse_) return 0;
  int32_t matched = 0;
  for (; matched < count; ++matched) {
    auto found = byHash_.find(hashes[matched]);
    if (found == byHash_.end()) break;
    Block& block = blocks_[found->second];
    const int32_t* want = tokens + static_cast<int64_t>(matched) * tokensPerBlock_;
    if (!std::equal(block.tokens.begin(), block.tokens.end(), want)) break;
    if (block.inLru) {
      lru_.erase(block.lruPos);
      block.inLru = false;
    }
    ++block.refs;
    out->push_back(found->second);
  }
  return matched;
}

void KvBlockManager::commit(int32_t block, uint64_t hash, const int32_t* tokens) {
  if (!enableReuse_) return;
  Block& b = blocks_[block];
  if (b.cached || byHash_.count(hash)) return;
  b.cached = true;
  b.hash = hash;
  b.tokens.assign(tokens, tokens + tokensPerBlock_);
  byHash_.emplace(hash, block);
}

}  // namespace kiln
