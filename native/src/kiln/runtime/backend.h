#pragma once
// The one interface between the backend-neutral runtime (Engine, Executor, KV block manager, sampling)
// and a backend (backends/cpu, backends/cuda). A backend owns where things live and how a step runs:
// the weights (the memory map itself on the CPU, one upload on a GPU), the activation arena, the paged
// KV cache's memory, the kernels' stream or threads, and the logits handed back to the host for
// sampling. Ops are bound to kernels through the KernelRegistry under the backend's name.
// Design: docs/decisions/0006-backends-behind-one-interface.md.
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "kiln/comm/communicator.h"
#include "kiln/dtype.h"
#include "kiln/runtime/kernel_registry.h"
#include "kiln/sampling/sampling.h"
#include "kiln/thread_pool.h"

namespace kiln {

struct KvGeometry {
  int32_t numLayers = 0;
  int32_t numKvHeads = 0;
  int32_t headDim = 0;
  int32_t tokensPerBlock = 0;
};

// What Engine::configure read off the header's target and the caller's options.
struct BackendTarget {
  std::string backend;            // "cpu" or "cuda"
  std::string isa;                // cpu: "avx2" / "generic"
  std::string computeCapability;  // cuda: "9.0"
  DType activationDType = DType::F32;
  int numThreads = 0;             // host threads (kernels on the CPU; sampling on either)
  bool forceGeneric = false;
  std::string enginePath;         // for messages (the rebuild command)
};

// The rows a backend that samples on its device (samplesOnDevice) draws itself in a step: the
// executor's sampled rows, with the CPU sampler's semantics (kiln/sampling), so that the logits never
// leave the device. Row i reads logit row logitRows[i] of the step.
struct StepSampling {
  const sampling::SampleRow* rows = nullptr;  // their `logits` is ignored
  const int32_t* logitRows = nullptr;
  int64_t count = 0;
  sampling::SampleOutput* out = nullptr;      // [count], filled when runStepAndSample returns
  bool hostLogits = false;                    // every logit row is wanted on the host as well (logitsRow)
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual const char* name() const = 0;
  // One line for a start-up message: the device and its memory.
  virtual std::string deviceDescription() const = 0;
  virtual std::string isa() const = 0;

  // The weights region of the engine file ([hostBase, hostBase + bytes), all weights inside it) is made
  // readable by the kernels; weightAddress maps a pointer inside it to where the kernels read it.
  virtual void placeWeights(const void* hostBase, size_t bytes) = 0;
  virtual const void* weightAddress(const void* hostPointer) const = 0;
  virtual uint64_t weightBytes() const = 0;

  // The activation arena (the header's arena.bytes), zeroed.
  virtual void allocateArena(int64_t bytes) = 0;
  // The host pointer of a float32 value at `byteOffset`, or null where the arena is not host memory.
  virtual float* hostValue(int64_t byteOffset) const = 0;

  // Memory the KV cache may take (bytes), or -1 when it cannot be read; asked after the weights and the
  // arena are in place.
  virtual int64_t availableMemoryBytes() const = 0;
  virtual uint64_t kvBytesPerToken(const KvGeometry& g) const = 0;
  // Throws std::runtime_error naming the size when the pool cannot be allocated.
  virtual void allocateKv(int32_t numBlocks, const KvGeometry& g) = 0;
  virtual uint64_t kvBytes() const = 0;
  // Copies every layer's K and V of block src into block dst, ordered before the next step.
  virtual void copyKvBlock(int32_t src, int32_t dst) = 0;

  // The value the logits are read from after each step ([logitRows, vocab]).
  virtual void setLogits(const ValueRef& logits) = 0;
  // Runs the bound ops over the step; when it returns, logitsRow(r) holds row r as float32 on the host.
  virtual void runStep(const std::vector<BoundOp>& ops, const StepContext& step) = 0;
  virtual const float* logitsRow(int64_t r) const = 0;

  // Device sampling: runStep, then the rows of `sampling` drawn where the logits are; the logits reach
  // the host (logitsRow) only when sampling.hostLogits asks for them. Only called when samplesOnDevice().
  virtual bool samplesOnDevice() const { return false; }
  virtual void runStepAndSample(const std::vector<BoundOp>& ops, const StepContext& step, const StepSampling& sampling) {
    (void)ops, (void)step, (void)sampling;
    throw std::logic_error("this backend does not sample on its device");
  }

  // A step run on a rank other than 0 of a tp/pp engine, which samples nothing: its logits, if any, are
  // not wanted on the host.
  virtual void runFollowerStep(const std::vector<BoundOp>& ops, const StepContext& step) { runStep(ops, step); }

  // Tensor/pipeline parallelism (docs/decisions/0010): a communicator over the ranks of `hostGroup` (an
  // MPI communicator; collective over it) whose buffers are this backend's device memory, ordered on its
  // stream (NCCL on CUDA); null where the host communicator serves the ops (the CPU).
  virtual std::unique_ptr<comm::Communicator> makeDeviceCommunicator(comm::Communicator& hostGroup) {
    (void)hostGroup;
    return nullptr;
  }

  // The ops' names, in the order runStep receives them (for a backend's profile).
  virtual void setOpNames(std::vector<std::string> names) { (void)names; }

  // Host threads for the executor's per-row sampling (and, on the CPU, the kernels).
  virtual ThreadPool* threadPool() = 0;
};

// The backend for an engine's target. Throws std::runtime_error with a clear message when this build
// or this machine cannot run it (no CUDA in this build, no device, another compute capability).
std::unique_ptr<Backend> makeBackend(const BackendTarget& target, const ModelFacts& facts);

// What the CUDA runtime reports (cudaInfo() in the addon).
struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  std::string computeCapability;  // "9.0"
  uint64_t totalBytes = 0;
  uint64_t freeBytes = 0;
};
struct CudaInfo {
  bool compiled = false;  // this build has the CUDA backend
  std::vector<CudaDeviceInfo> devices;
  std::string error;      // the runtime's message when it found no usable device
};
CudaInfo queryCuda();

// For tests (the addon's testing.sampleRows with device "cuda"): host rows drawn by the CUDA backend's
// device sampler on the current device. Throws in a build without CUDA.
void sampleRowsOnCuda(const sampling::SampleRow* rows, int64_t numRows, int64_t vocab, sampling::SampleOutput* out);

}  // namespace kiln
