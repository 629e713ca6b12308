#pragma once
// XXH64 (https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md), streaming, so a writer can
// hash a file while it writes it. The one-shot `xxh64()` is declared in engine_file.h.
#include <cstddef>
#include <cstdint>

namespace kiln {

class Xxh64 {
 public:
  explicit Xxh64(uint64_t seed = 0);
  void update(const void* data, size_t size);
  uint64_t digest() const;

 private:
  uint64_t seed_;
  uint64_t acc_[4];
  uint64_t total_ = 0;
  uint8_t buffer_[32];
  size_t buffered_ = 0;
};

}  // namespace kiln
