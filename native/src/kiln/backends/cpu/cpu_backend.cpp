#include "kiln/backends/cpu/cpu_backend.h"

#include <algorithm>
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
    for (const BoundOp& op : ops) op(rt);
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
};

}  // namespace

std::unique_ptr<Backend> makeCpuBackend(const BackendTarget& target) { return std::make_unique<CpuBackend>(target); }

}  // namespace kiln
