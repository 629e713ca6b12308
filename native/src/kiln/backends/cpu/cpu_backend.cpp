#include "kiln/backends/cpu/cpu_backend.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <unistd.h>

#include "kiln/runtime/aligned_buffer.h"

namespace kiln {

namespace {

// MemAvailable of /proc/meminfo (Linux), else the free physical pages; -1 when neither can be read.
int64_t hostAvailableMemoryBytes() {
  if (FILE* f = std::fopen("/proc/meminfo", "r")) {
    char line[256];
    long long kib = -1;
    while (std::fgets(line, sizeof line, f)) {
      if (std::sscanf(line, "MemAvailable: %lld kB", &kib) == 1) break;
    }
    std::fclose(f);
    if (kib > 0) return static_cast<int64_t>(kib) * 1024;
  }
#if defined(_SC_AVPHYS_PAGES) && defined(_SC_PAGESIZE)
  const long pages = sysconf(_SC_AVPHYS_PAGES);
  const long pageSize = sysconf(_SC_PAGESIZE);
  if (pages > 0 && pageSize > 0) return static_cast<int64_t>(pages) * pageSize;
#endif
  return -1;
}

// The kernel set for an avx2 engine (the header's minimum): the best this CPU has, capped
// by KILN_CPU_ISA (generic | avx2 | avx512 | avx512_bf16) when set, so tests and comparisons can run the
// lower sets on one machine. The engine file stays the same: it records only the minimum it needs.
Isa chooseIsa() {
  Isa isa = detectIsa();
  if (const char* cap = std::getenv("KILN_CPU_ISA"); cap && *cap) {
    Isa limit;
    if (!parseIsa(cap, &limit)) {
      throw std::runtime_error(std::string("KILN_CPU_ISA=\"") + cap +
                               "\" is not a kernel set (expected generic, avx2, avx512 or avx512_bf16)");
    }
    if (limit > isa) {
      throw std::runtime_error(std::string("KILN_CPU_ISA=") + cap + " but this CPU supports at most " + isaName(isa));
    }
    isa = limit;
  }
  return isa;
}

// How multi-row int8 linears treat their input (KernelEnv::int8Act, decision 0017):
// KILN_CPU_INT8_ACTIVATIONS=auto (the default: int8x2 on the VNNI set), float (weight-only), int8, int8x2
// or adaptive.
Int8Activations chooseInt8Activations() {
  Int8Activations mode = Int8Activations::Auto;
  if (const char* v = std::getenv("KILN_CPU_INT8_ACTIVATIONS"); v && *v && !parseInt8Activations(v, &mode)) {
    throw std::runtime_error(std::string("KILN_CPU_INT8_ACTIVATIONS=\"") + v + "\" is not a mode (expected auto, float, int8, int8x2 or adaptive)");
  }
  return mode;
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const BackendTarget& target) {
    if (target.isa == "avx2") {
      if (detectIsa() < Isa::Avx2) {
        throw std::runtime_error("engine was built for cpu/avx2 but this CPU supports only generic kernels: rebuild it");
      }
      isa_ = target.forceGeneric ? Isa::Generic : chooseIsa();
    } else if (target.isa == "generic") {
      isa_ = Isa::Generic;
    } else {
      throw std::runtime_error("header.target.isa \"" + target.isa +
                               "\" is not known to this runtime (expected \"avx2\" or \"generic\")");
    }
    isaName_ = target.isa;
    int8Act_ = chooseInt8Activations();
    const char* profile = std::getenv("KILN_CPU_PROFILE");
    profile_ = profile && std::strcmp(profile, "1") == 0;
    int numThreads = target.numThreads;
    if (numThreads <= 0) numThreads = std::max(1u, std::thread::hardware_concurrency());
    threads_ = std::make_unique<ThreadPool>(numThreads);
  }

  const char* name() const override { return "cpu"; }
  std::string deviceDescription() const override {
    return std::string("cpu (") + isaName(isa_) + ", " + std::to_string(threads_->size()) + " threads)";
  }
  std::string isa() const override { return isaName_; }

  void placeWeights(const void*, size_t bytes) override { weightBytes_ = bytes; }
  const void* weightAddress(const void* hostPointer) const override { return hostPointer; }
  uint64_t weightBytes() const override { return weightBytes_; }

  void allocateArena(int64_t arenaBytes) override {
    const size_t bytes = static_cast<size_t>(arenaBytes);
    try {
      arena_ = AlignedBuffer(bytes);
    } catch (const std::bad_alloc&) {
      throw std::runtime_error("cannot allocate the activation arena (header.arena.bytes = " + std::to_string(bytes) + ")");
    }
    std::memset(arena_.data(), 0, arena_.size());
  }
  float* hostValue(int64_t byteOffset) const override {
    return reinterpret_cast<float*>(static_cast<char*>(arena_.data()) + byteOffset);
  }

  int64_t availableMemoryBytes() const override { return hostAvailableMemoryBytes(); }
  uint64_t kvBytesPerToken(const KvGeometry& g) const override {
    return KvBlockPool::bytesFor(1, g.numLayers, g.numKvHeads, g.headDim, 1);
  }
  void allocateKv(int32_t numBlocks, const KvGeometry& g) override {
    kv_ = std::make_unique<KvBlockPool>(numBlocks, g.numLayers, g.numKvHeads, g.headDim, g.tokensPerBlock);
  }
  uint64_t kvBytes() const override {
    const KvCacheView& v = kv_->view();
    return KvBlockPool::bytesFor(v.numBlocks, v.numLayers, v.numKvHeads, v.headDim, v.tokensPerBlock);
  }
  void copyKvBlock(int32_t src, int32_t dst) override { kv_->copyBlock(src, dst); }

  void setLogits(const ValueRef& logits) override { logits_ = logits; }
  void runStep(const std::vector<BoundOp>& ops, const StepContext& hostStep) override {
    StepContext step = hostStep;
    step.kv = kv_->view();
    StepRuntime rt;
    rt.env.isa = isa_;
    rt.env.int8Act = int8Act_;
    rt.env.pool = threads_.get();
    rt.step = &step;
    if (!profile_) {
      for (const BoundOp& op : ops) op(rt);
      return;
    }
    ProfileTotals& totals = step.numTokens == step.numSeqs ? profileDecode_ : profileOther_;
    if (totals.ms.size() < ops.size()) totals.ms.resize(ops.size(), 0.0);
    for (size_t i = 0; i < ops.size(); ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      ops[i](rt);
      totals.ms[i] += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    }
    ++totals.steps;
    totals.tokens += step.numTokens;
  }
  void setOpNames(std::vector<std::string> names) override { opNames_ = std::move(names); }
  ~CpuBackend() override {
    if (!profile_) return;
    printProfile(profileDecode_, "decode");
    printProfile(profileOther_, "other (prefill, mixed)");
  }
  const float* logitsRow(int64_t r) const override { return logits_.data + r * logits_.rowStride; }

  ThreadPool* threadPool() override { return threads_.get(); }

 private:
  Isa isa_ = Isa::Generic;
  Int8Activations int8Act_ = Int8Activations::Auto;
  std::string isaName_;
  uint64_t weightBytes_ = 0;
  AlignedBuffer arena_;
  std::unique_ptr<KvBlockPool> kv_;
  std::unique_ptr<ThreadPool> threads_;
  ValueRef logits_;

  // KILN_CPU_PROFILE=1: each op's wall time summed per op index, for decode steps and the others apart, and
  // printed to stderr when the engine is disposed: by op name, then the costliest single ops (the LM head is
  // one linear among many, and shows there). Timing costs two clock reads per op.
  bool profile_ = false;
  std::vector<std::string> opNames_;
  struct ProfileTotals {
    std::vector<double> ms;
    int64_t steps = 0, tokens = 0;
  };
  ProfileTotals profileDecode_, profileOther_;
  void printProfile(const ProfileTotals& p, const char* what) const {
    if (p.steps == 0) return;
    std::vector<std::pair<std::string, double>> byName;
    std::vector<std::pair<size_t, double>> byIndex;
    double total = 0.0;
    for (size_t i = 0; i < p.ms.size(); ++i) {
      const std::string name = i < opNames_.size() ? opNames_[i] : std::string("?");
      auto it = std::find_if(byName.begin(), byName.end(), [&](const auto& e) { return e.first == name; });
      if (it == byName.end()) byName.emplace_back(name, p.ms[i]); else it->second += p.ms[i];
      byIndex.emplace_back(i, p.ms[i]);
      total += p.ms[i];
    }
    const auto byTime = [](const auto& a, const auto& b) { return a.second > b.second; };
    std::sort(byName.begin(), byName.end(), byTime);
    std::sort(byIndex.begin(), byIndex.end(), byTime);
    const double steps = static_cast<double>(p.steps);
    std::fprintf(stderr, "kiln cpu profile: %lld %s steps (%.1f tokens per step), %.1f us of ops per step\n",
                 static_cast<long long>(p.steps), what, static_cast<double>(p.tokens) / steps, 1e3 * total / steps);
    for (const auto& e : byName) {
      std::fprintf(stderr, "  %-20s %9.1f us/step  %5.1f%%\n", e.first.c_str(), 1e3 * e.second / steps, 100.0 * e.second / total);
    }
    std::fprintf(stderr, "  costliest ops:\n");
    for (size_t k = 0; k < std::min<size_t>(8, byIndex.size()); ++k) {
      const size_t i = byIndex[k].first;
      std::fprintf(stderr, "  #%-4zu %-14s %9.1f us/step  %5.1f%%\n", i, i < opNames_.size() ? opNames_[i].c_str() : "?",
                   1e3 * byIndex[k].second / steps, 100.0 * byIndex[k].second / total);
    }
  }
};

}  // namespace

std::unique_ptr<Backend> makeCpuBackend(const BackendTarget& target) { return std::make_unique<CpuBackend>(target); }

}  // namespace kiln
