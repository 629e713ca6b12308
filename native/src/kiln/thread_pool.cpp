#include "kiln/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace kiln {

namespace {
// Set on pool workers so that a parallelFor issued from inside a task runs inline instead of waiting
// on workers that are all busy with the outer job (which would deadlock).
thread_local bool tInsideWorker = false;
}  // namespace

// One parallelFor call. It lives on the caller's stack; the caller does not return before every worker
// that picked it up has let go of it (Impl::busy back to zero).
struct Job {
  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  int64_t n = 0;
  int chunks = 0;
  std::atomic<int> next{0};
  std::mutex errorMutex;
  std::exception_ptr error;

  // Claims chunks until none are left. Chunk i is [n * i / chunks, n * (i + 1) / chunks): contiguous,
  // disjoint, and each at least n / chunks >= grain long.
  void run() {
    for (;;) {
      const int i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= chunks) return;
      const int64_t begin = n * i / chunks;
      const int64_t end = n * (i + 1) / chunks;
      try {
        (*fn)(begin, end);
      } catch (...) {
        std::lock_guard<std::mutex> lock(errorMutex);
        if (!error) error = std::current_exception();
      }
    }
  }
};

struct ThreadPool::Impl {
  std::vector<std::thread> workers;
  std::mutex callMutex;  // one job at a time when several threads share a pool
  std::mutex mutex;      // guards job, generation, busy, stop
  std::condition_variable wake;
  std::condition_variable finished;
  Job* job = nullptr;
  uint64_t generation = 0;
  int busy = 0;
  bool stop = false;

  void workerLoop() {
    tInsideWorker = true;
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex);
    for (;;) {
      wake.wait(lock, [&] { return stop || (job != nullptr && generation != seen); });
      if (stop) return;
      seen = generation;
      Job* current = job;
      ++busy;
      lock.unlock();
      current->run();
      lock.lock();
      if (--busy == 0) finished.notify_all();
    }
  }
};

ThreadPool::ThreadPool(int numThreads) : impl_(new Impl) {
  // The caller works too, so numThreads - 1 workers give numThreads threads in a parallelFor.
  for (int i = 1; i < numThreads; ++i) impl_->workers.emplace_back([this] { impl_->workerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stop = true;
  }
  impl_->wake.notify_all();
  for (auto& t : impl_->workers) t.join();
}

int ThreadPool::size() const { return static_cast<int>(impl_->workers.size()) + 1; }

void ThreadPool::parallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t maxChunks = std::min<int64_t>(size(), n / grain);
  if (maxChunks <= 1 || tInsideWorker) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> callLock(impl_->callMutex);
  Job job;
  job.fn = &fn;
  job.n = n;
  job.chunks = static_cast<int>(maxChunks);
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->job = &job;
    ++impl_->generation;
  }
  impl_->wake.notify_all();
  job.run();
  {
    // All chunks are claimed once run() returns here; those claimed by workers are done when busy is 0.
    // Clearing `job` under the lock keeps a worker that wakes late from touching this stack frame.
    std::unique_lock<std::mutex> lock(impl_->mutex);
    impl_->finished.wait(lock, [&] { return impl_->busy == 0; });
    impl_->job = nullptr;
  }
  if (job.error) std::rethrow_exception(job.error);
}

}  // namespace kiln
