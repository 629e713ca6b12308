#pragma once
// A fixed pool of worker threads for data-parallel kernels. parallelFor splits [0, n) into contiguous
// ranges, runs them on the workers and the calling thread, and returns when all are done.
#include <cstdint>
#include <functional>
#include <memory>

namespace kiln {

class ThreadPool {
 public:
  explicit ThreadPool(int numThreads);  // numThreads <= 1: everything runs on the caller
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const;
  // fn(begin, end) is called on disjoint ranges covering [0, n); ranges are at least `grain` long.
  void parallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Lowers the calling thread's scheduling priority (nice +5 on Linux, where nice values are per
// thread). Kiln's compute threads call it so that, when cores are contended, the Node.js event loop
// thread still gets the CPU first: timers and HTTP I/O stay responsive while a model runs.
void lowerComputeThreadPriority();

}  // namespace kiln
