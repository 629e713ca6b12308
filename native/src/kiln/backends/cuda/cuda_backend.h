#pragma once
// The CUDA backend: the engine's weights uploaded once to device memory, the activation arena and the
// paged KV cache in device memory (elements of the engine's activation dtype), one stream on which
// every op of a step is enqueued, and the step's float32 logits, sampled on the device (device_sampler.h)
// or copied to the host when the executor asks.
// The op adapters (ops/) reach the stream, the arena and cuBLASLt through this class.
#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kiln/backends/cuda/device_sampler.h"
#include "kiln/backends/cuda/device_step.h"
#include "kiln/backends/cuda/gemm.h"
#include "kiln/backends/cuda/kernels/kernels.h"
#include "kiln/runtime/backend.h"

namespace kiln {
namespace cuda {

std::unique_ptr<Backend> makeCudaBackend(const BackendTarget& target, const ModelFacts& facts);
CudaInfo queryDevices();

class CudaBackend final : public Backend {
 public:
  CudaBackend(const BackendTarget& target, const ModelFacts& facts);
  ~CudaBackend() override;

  const char* name() const override { return "cuda"; }
  std::string deviceDescription() const override;
  std::string isa() const override;

  void placeWeights(const void* hostBase, size_t bytes) override;
  const void* weightAddress(const void* hostPointer) const override;
  uint64_t weightBytes() const override { return weightBytes_; }

  void allocateArena(int64_t bytes) override;
  float* hostValue(int64_t) const override { return nullptr; }

  int64_t availableMemoryBytes() const override;
  uint64_t kvBytesPerToken(const KvGeometry& g) const override;
  void allocateKv(int32_t numBlocks, const KvGeometry& g) override;
  uint64_t kvBytes() const override { return kvBytes_; }
  void copyKvBlock(int32_t src, int32_t dst) override;

  void setLogits(const ValueRef& logits) override;
  void runStep(const std::vector<BoundOp>& ops, const StepContext& step) override;
  // Device sampling is on unless KILN_CUDA_SAMPLING=host (then the executor samples on the host).
  bool samplesOnDevice() const override { return deviceSampling_; }
  void runStepAndSample(const std::vector<BoundOp>& ops, const StepContext& step, const StepSampling& sampling) override;
  const float* logitsRow(int64_t r) const override { return hostLogits_ + r * vocab_; }
  void runFollowerStep(const std::vector<BoundOp>& ops, const StepContext& step) override;
  // NCCL over the ranks of hostGroup, on this backend's device and stream (a build without NCCL refuses).
  std::unique_ptr<comm::Communicator> makeDeviceCommunicator(comm::Communicator& hostGroup) override;

  ThreadPool* threadPool() override { return threads_.get(); }
  void setOpNames(std::vector<std::string> names) override { opNames_ = std::move(names); }

  // For the op adapters.
  cudaStream_t stream() const { return stream_; }
  DType kvDType() const { return dtype_; }
  Gemm& gemm() { return *gemm_; }
  const DeviceKv& kv() const { return kv_; }
  // A value as a device matrix (its element (0, 0), dtype and row stride).
  Matrix value(const ValueRef& v) const { return Matrix{static_cast<char*>(arena_) + v.byteOffset, v.dtype, v.rowStride}; }
  // Device scratch shared by ops that need temporaries within their own call (ops run one at a time on
  // the stream): reserved while binding, allocated before the first step.
  void reserveScratch(size_t bytes) { scratchWanted_ = std::max(scratchWanted_, bytes); }
  void* scratch() const { return scratch_; }
  // Where the kernels' pointer to a weight (weightAddress) reads from on the host, for adapters that
  // precompute tables from weights while binding.
  const void* hostWeight(const void* devicePointer) const {
    return hostWeights_ + (static_cast<const uint8_t*>(devicePointer) - static_cast<const uint8_t*>(weights_));
  }
  // A float32 table made on the host while binding, uploaded once and kept for the engine's life.
  // Tables with the same key are made once and shared (rope's cos/sin table serves every layer).
  const float* deviceTable(const std::string& key, const std::vector<float>& values);
  bool hasTable(const std::string& key) const { return tables_.count(key) != 0; }
  // Zeroed device counters kept for the engine's life, shared by every op that asks with the same key
  // (each leaves them at zero: the attention's split-K tickets).
  unsigned* deviceCounters(const std::string& key, size_t count) {
    return reinterpret_cast<unsigned*>(const_cast<float*>(deviceTable(key, std::vector<float>(count, 0.0f))));
  }
  int multiProcessors() const { return props_.multiProcessorCount; }
  const float* table(const std::string& key) const { return tables_.at(key); }
  // An op whose step could fail on the host (a check of the step's data) makes replaying captured
  // steps unsafe: it turns CUDA graphs off for the engine.
  void disallowGraphs() { graphsAllowed_ = false; }

 private:
  void stageStep(const StepContext& step, DeviceStep* out);
  void enqueueStep(const std::vector<BoundOp>& ops, const StepRuntime& rt, int64_t logitRows);
  cudaGraphExec_t captureStep(const std::vector<BoundOp>& ops, const StepRuntime& rt, int64_t logitRows);

  int device_ = 0;
  cudaDeviceProp props_{};
  DType dtype_ = DType::F32;  // the KV cache's (the engine's activationDType)
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<Gemm> gemm_;
  std::unique_ptr<ThreadPool> threads_;

  const uint8_t* hostWeights_ = nullptr;
  void* weights_ = nullptr;
  uint64_t weightBytes_ = 0;
  void* arena_ = nullptr;
  DeviceKv kv_;
  uint64_t kvBytes_ = 0;
  uint64_t kvBlockBytes_ = 0;

  // The step's int32 arrays, staged in pinned host memory and uploaded to fixed places (so that a
  // captured step reads the next step's data): token ids, positions and sequence indices at 0,
  // maxNumTokens and 2 maxNumTokens, logit rows at 3 maxNumTokens, then one row of
  // maxBlocksPerSeq_ block ids per sequence.
  int32_t* hostStage_ = nullptr;
  int32_t* deviceStage_ = nullptr;
  int64_t maxNumTokens_ = 0;
  int64_t maxBlocksPerSeq_ = 0;
  std::vector<int32_t> seqMaxPosition_;

  // Decode steps (one token per sequence) captured once per batch size, then replayed (TensorRT-LLM's
  // CUDA graph mode). KILN_CUDA_GRAPHS=0 turns them off.
  bool graphsAllowed_ = true;

  // KILN_CUDA_PROFILE=1: each op of the decode steps timed with events (graphs off), the totals per op
  // printed to stderr when the engine is disposed.
  bool profile_ = false;
  std::vector<std::string> opNames_;
  std::vector<cudaEvent_t> profileEvents_;
  // Per op index, for decode steps and for the others (prefill and mixed steps) apart.
  struct ProfileTotals {
    std::vector<double> ms;
    int64_t steps = 0, tokens = 0;
  };
  ProfileTotals profileDecode_, profileOther_;
  void printProfile(const ProfileTotals& p, const char* what) const;
  // KILN_CUDA_STEP_TIMING=1: the host time of runStep and the device time of the step (events around
  // it; graphs stay on), averaged and printed to stderr on dispose.
  // Decode steps (replayed graphs) and the others (prefill, mixed) apart.
  bool stepTiming_ = false;
  cudaEvent_t stepStart_ = nullptr, stepEnd_ = nullptr;
  struct StepTotals {
    double hostMs = 0.0, deviceMs = 0.0;
    int64_t steps = 0, tokens = 0;
  };
  StepTotals decodeTiming_, otherTiming_;
  std::vector<cudaGraphExec_t> decodeGraphs_;  // by batch size; null until captured
  std::vector<uint8_t> decodeSeen_;             // by batch size: a tp/pp engine's first decode step ran eagerly
  bool parallel_ = false;                       // a rank of a tp/pp engine

  ValueRef logits_;
  int64_t vocab_ = 0;
  int64_t maxLogitRows_ = 0;
  float* deviceLogits_ = nullptr;
  float* hostLogits_ = nullptr;  // pinned

  bool deviceSampling_ = true;
  DeviceSampler sampler_;

  std::map<std::string, float*> tables_;  // deviceTable's, freed on dispose
  size_t scratchWanted_ = 0;
  void* scratch_ = nullptr;
};

}  // namespace cuda
}  // namespace kiln
