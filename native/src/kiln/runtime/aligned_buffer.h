#pragma once
// A heap block aligned for vector loads (64 bytes, a cache line). Not zeroed: callers that need zeros
// clear it themselves, so a large KV pool only commits the pages it touches.
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>

namespace kiln {

class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t bytes) {
    if (bytes == 0) return;
    const size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
    void* p = std::aligned_alloc(kAlign, rounded);
    if (!p) throw std::bad_alloc();
    data_.reset(p);
    size_ = bytes;
  }
  void* data() const { return data_.get(); }
  size_t size() const { return size_; }

  static constexpr size_t kAlign = 64;

 private:
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<void, Free> data_;
  size_t size_ = 0;
};

}  // namespace kiln
