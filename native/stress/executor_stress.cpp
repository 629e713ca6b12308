// A stress driver for the executor's threads, for ThreadSanitizer (issue 16): the executor thread and
// its kernel thread pool, with several client threads enqueueing, cancelling, pausing and resuming
// requests and reading stats concurrently, then a shutdown that cancels what is left. Built and run by
// tools/sanitize/tsan-executor.sh against an engine file; exits non-zero when a request is lost (no
// final event) or the KV blocks do not all come back.
//
//   executor_stress <engine-file> [requests per client thread]
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "kiln/runtime/engine.h"
#include "kiln/runtime/executor.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: executor_stress <engine-file> [requests per client thread]\n");
    return 2;
  }
  const int perClient = argc > 2 ? std::stoi(argv[2]) : 40;
  kiln::EngineOptions options;
  options.numThreads = 2;
  auto engine = std::make_shared<kiln::Engine>(argv[1], options);
  const int64_t vocab = engine->info().vocabSize;
  const int64_t maxSeqLen = engine->info().maxSeqLen;

  std::mutex mutex;
  std::set<kiln::RequestId> open;
  std::atomic<int64_t> finished{0}, cancelled{0}, tokens{0};
  kiln::ExecutorConfig config;
  config.capacitySchedulerPolicy = kiln::CapacitySchedulerPolicy::MaxUtilization;
  auto executor = std::make_unique<kiln::Executor>(engine, config, [&](kiln::IterationReport&& report) {
    std::lock_guard<std::mutex> lock(mutex);
    for (const kiln::RequestEvent& e : report.events) {
      tokens += static_cast<int64_t>(e.newTokens.size());
      if (e.finishReason != kiln::FinishReason::None) {
        open.erase(e.id);
        ++finished;
        if (e.finishReason == kiln::FinishReason::Cancelled) ++cancelled;
      }
    }
  });
  const int64_t totalBlocks = executor->stats().kvBlocksTotal;

  std::atomic<int64_t> enqueued{0};
  auto client = [&](int seed) {
    std::mt19937 rng(static_cast<uint32_t>(seed));
    std::vector<kiln::RequestId> mine;
    for (int i = 0; i < perClient; ++i) {
      kiln::Request r;
      const int promptLength = 1 + static_cast<int>(rng() % 8);
      for (int t = 0; t < promptLength; ++t) r.inputIds.push_back(static_cast<int32_t>(rng() % vocab));
      r.maxTokens = 1 + static_cast<int64_t>(rng() % std::max<int64_t>(1, maxSeqLen - promptLength - 1));
      r.seed = rng();
      if (rng() % 2) {
        r.sampling.temperature = 0.8f;
        r.sampling.topK = 20;
      }
      kiln::RequestId id;
      {
        std::lock_guard<std::mutex> lock(mutex);
        id = executor->enqueue(std::move(r));
        open.insert(id);
      }
      ++enqueued;
      mine.push_back(id);
      switch (rng() % 6) {
        case 0: executor->cancel(mine[rng() % mine.size()]); break;
        case 1: executor->setPaused(id, true); break;
        case 2: executor->setPaused(mine[rng() % mine.size()], false); break;
        case 3: (void)executor->stats(); break;
        default: break;
      }
      if (rng() % 4 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000));
    }
    // Resume everything this client paused, so that nothing waits for the shutdown.
    for (kiln::RequestId id : mine) executor->setPaused(id, false);
  };
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) clients.emplace_back(client, c + 1);
  std::thread watcher([&] {
    for (int i = 0; i < 50; ++i) {
      (void)executor->stats();
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  for (auto& t : clients) t.join();
  watcher.join();
  // Let most finish on their own (up to 20 s), then cancel the rest.
  for (int i = 0; i < 2000 && finished.load() + enqueued.load() / 10 < enqueued.load(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  executor->shutdown(true);
  const kiln::ExecutorStats stats = executor->stats();
  std::printf("executor stress: %lld requests, %lld finished (%lld cancelled), %lld tokens, KV blocks %lld free of %lld\n",
              static_cast<long long>(enqueued.load()), static_cast<long long>(finished.load()), static_cast<long long>(cancelled.load()),
              static_cast<long long>(tokens.load()), static_cast<long long>(stats.kvBlocksFree), static_cast<long long>(totalBlocks));
  const bool ok = finished.load() == enqueued.load() && open.empty() && stats.kvBlocksFree == totalBlocks;
  executor.reset();
  return ok ? 0 : 1;
}
