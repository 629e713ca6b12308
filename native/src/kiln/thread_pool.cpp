#include "kiln/thread_pool.h"

#if defined(__linux__)
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
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

// Busy-waits until pred() or maxMicros have passed; true when pred() held. A parallelFor in a decode step
// typically follows the previous one within microseconds, while a futex sleep/wake round trip costs
// tens of microseconds, so both the workers and the caller spin a little before they sleep.
template <typename Pred>
bool spinUntil(const Pred& pred, int64_t maxMicros) {
  const auto start = std::chrono::steady_clock::now();
  for (uint32_t i = 1;; ++i) {
    if (pred()) return true;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
    if ((i & 63) == 0) {
      if (std::chrono::steady_clock::now() - start > std::chrono::microseconds(maxMicros)) return pred();
      // When the cores are oversubscribed, a spinning thread may share its core with the thread it waits
      // for, or with the caller's serial work between kernels: yielding lets that one run (kiln bench at
      // concurrency 16 with another process busy on one of two cores: ~1,880 -> ~2,310 tok/s).
      // Uncontended, the yield returns at once.
      std::this_thread::yield();
    }
  }
}

constexpr int64_t kWorkerSpinMicros = 100;
constexpr int64_t kCallerSpinMicros = 200;

struct ThreadPool::Impl {
  std::vector<std::thread> workers;
  std::mutex callMutex;  // one job at a time when several threads share a pool
  std::mutex mutex;      // guards job; generation, busy and stop change only under it
  std::condition_variable wake;
  std::condition_variable finished;
  Job* job = nullptr;
  std::atomic<uint64_t> generation{0};  // bumped per job; read without the lock while spinning
  std::atomic<int> busy{0};             // workers holding the current job
  std::atomic<bool> stop{false};

  void workerLoop() {
    tInsideWorker = true;
    lowerComputeThreadPriority();
    uint64_t seen = 0;
    for (;;) {
      spinUntil([&] { return generation.load(std::memory_order_acquire) != seen || stop.load(); }, kWorkerSpinMicros);
      std::unique_lock<std::mutex> lock(mutex);
      if (!stop.load() && job == nullptr && generation.load() != seen) {
        // That job finished without this worker; spin again for the next one rather than sleep.
        seen = generation.load();
        continue;
      }
      // A worker takes a job only under the lock and while it is published, so the caller, which
      // unpublishes it under the lock once busy is zero, never leaves a worker holding a dead job.
      wake.wait(lock, [&] { return stop.load() || (job != nullptr && generation.load() != seen); });
      if (stop.load()) return;
      seen = generation.load();
      Job* current = job;
      busy.fetch_add(1);
      lock.unlock();
      current->run();
      lock.lock();
      if (busy.fetch_sub(1) == 1) finished.notify_all();
    }
  }
};

void lowerComputeThreadPriority() {
#if defined(__linux__)
  constexpr int kComputeThreadNice = 5;
  // Best effort: failing to change priority changes nothing else.
  (void)setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), kComputeThreadNice);
#endif
}

ThreadPool::ThreadPool(int numThreads) : impl_(new Impl) {
  // The caller works too, so numThreads - 1 workers give numThreads threads in a parallelFor.
  for (int i = 1; i < numThreads; ++i) impl_->workers.emplace_back([this] { impl_->workerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stop.store(true);
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
    impl_->generation.fetch_add(1);
  }
  impl_->wake.notify_all();
  job.run();
  // All chunks are claimed once run() returns here; those claimed by workers are done when busy is 0.
  // Clearing `job` under the lock keeps a worker that comes late from touching this stack frame.
  spinUntil([&] { return impl_->busy.load(std::memory_order_acquire) == 0; }, kCallerSpinMicros);
  {
    std::unique_lock<std::mutex> lock(impl_->mutex);
    impl_->finished.wait(lock, [&] { return impl_->busy.load() == 0; });
    impl_->job = nullptr;
  }
  if (job.error) std::rethrow_exception(job.error);
}

}  // namespace kiln
