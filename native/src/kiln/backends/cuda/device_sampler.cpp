#include "kiln/backends/cuda/device_sampler.h"

#include <cstring>
#include <stdexcept>
#include <string>

#include "kiln/backends/cuda/cuda_check.h"

namespace kiln {
namespace cuda {

namespace {

int32_t offsetOf(size_t n) {
  if (n > static_cast<size_t>(INT32_MAX)) throw std::runtime_error("device sampling: a step's controls pass 2^31 entries");
  return static_cast<int32_t>(n);
}

template <typename T>
int32_t append(std::vector<T>& to, const std::vector<T>& from) {
  const int32_t at = offsetOf(to.size());
  to.insert(to.end(), from.begin(), from.end());
  return at;
}

size_t alignUp(size_t n, size_t a) { return (n + a - 1) / a * a; }

}  // namespace

DeviceSampler::~DeviceSampler() {
  if (hostStage_) cudaFreeHost(hostStage_);
  if (deviceStage_) cudaFree(deviceStage_);
  if (hostOutputs_) cudaFreeHost(hostOutputs_);
  if (deviceOutputs_) cudaFree(deviceOutputs_);
}

void DeviceSampler::reserve(size_t stageBytes, size_t outputBytes) {
  if (stageBytes > stageCapacity_) {
    const size_t bytes = alignUp(stageBytes + stageBytes / 2, 4096);
    if (hostStage_) cudaFreeHost(hostStage_);
    if (deviceStage_) cudaFree(deviceStage_);
    hostStage_ = nullptr;
    deviceStage_ = nullptr;
    stageCapacity_ = 0;
    check(cudaMallocHost(&hostStage_, bytes), "cudaMallocHost (sampling)");
    check(cudaMalloc(&deviceStage_, bytes), "cudaMalloc (sampling)");
    stageCapacity_ = bytes;
  }
  if (outputBytes > outputCapacity_) {
    const size_t bytes = alignUp(outputBytes, 4096);
    if (hostOutputs_) cudaFreeHost(hostOutputs_);
    if (deviceOutputs_) cudaFree(deviceOutputs_);
    hostOutputs_ = nullptr;
    deviceOutputs_ = nullptr;
    outputCapacity_ = 0;
    check(cudaMallocHost(&hostOutputs_, bytes), "cudaMallocHost (sampling outputs)");
    check(cudaMalloc(&deviceOutputs_, bytes), "cudaMalloc (sampling outputs)");
    outputCapacity_ = bytes;
  }
}

void DeviceSampler::enqueue(cudaStream_t stream, float* logits, int64_t vocab, const StepSampling& plan) {
  const size_t n = static_cast<size_t>(plan.count);
  if (n == 0) return;
  if (controls_.size() < n) controls_.resize(n);
  rows_.resize(n);
  ints_.clear();
  floats_.clear();
  masks_.clear();
  const size_t maskWords = static_cast<size_t>(sampling::tokenMaskWords(vocab));
  for (size_t i = 0; i < n; ++i) {
    const sampling::SampleRow& in = plan.rows[i];
    const sampling::SamplingParams& p = *in.params;
    sampling::SparseControls& c = controls_[i];
    sampling::collectSparseControls(in.tokens, p, vocab, &c);
    DeviceSampleRow& r = rows_[i];
    r.logitRow = plan.logitRows[i];
    r.temperature = p.temperature;
    r.topK = p.topK;
    r.topP = p.topP;
    r.minP = p.minP;
    r.repetitionPenalty = p.repetitionPenalty;
    r.presencePenalty = p.presencePenalty;
    r.frequencyPenalty = p.frequencyPenalty;
    r.logprobs = p.logprobs;
    r.wantLogprob = in.wantLogprob ? 1 : 0;
    r.uniform = p.temperature == 0.0f ? 0.0 : sampling::uniform(p.seed, in.step, in.sequenceIndex);
    r.biasIdsAt = append(ints_, c.biasIds);
    r.biasValuesAt = append(floats_, c.biasValues);
    r.biasCount = offsetOf(c.biasIds.size());
    r.repetitionIdsAt = append(ints_, c.repetitionIds);
    r.repetitionCount = offsetOf(c.repetitionIds.size());
    r.countIdsAt = append(ints_, c.countIds);
    r.countsAt = append(ints_, c.counts);
    r.countCount = offsetOf(c.countIds.size());
    r.bannedIdsAt = append(ints_, c.bannedIds);
    r.bannedCount = offsetOf(c.bannedIds.size());
    if (in.allowed != nullptr) {
      r.maskWordsAt = static_cast<int64_t>(masks_.size());
      masks_.insert(masks_.end(), in.allowed, in.allowed + maskWords);
    } else {
      r.maskWordsAt = -1;
    }
  }
  const size_t rowsBytes = n * sizeof(DeviceSampleRow);
  const size_t intsAt = rowsBytes, floatsAt = intsAt + ints_.size() * sizeof(int32_t);
  const size_t masksAt = floatsAt + floats_.size() * sizeof(float);
  const size_t stageBytes = masksAt + masks_.size() * sizeof(uint32_t);
  reserve(stageBytes, n * sizeof(sampling::SampleOutput));
  std::memcpy(hostStage_, rows_.data(), rowsBytes);
  if (!ints_.empty()) std::memcpy(hostStage_ + intsAt, ints_.data(), ints_.size() * sizeof(int32_t));
  if (!floats_.empty()) std::memcpy(hostStage_ + floatsAt, floats_.data(), floats_.size() * sizeof(float));
  if (!masks_.empty()) std::memcpy(hostStage_ + masksAt, masks_.data(), masks_.size() * sizeof(uint32_t));
  check(cudaMemcpyAsync(deviceStage_, hostStage_, stageBytes, cudaMemcpyHostToDevice, stream), "cudaMemcpyAsync (sampling)");
  sampleRows(stream, logits, vocab, reinterpret_cast<const DeviceSampleRow*>(deviceStage_), static_cast<int64_t>(n),
             reinterpret_cast<const int32_t*>(deviceStage_ + intsAt), reinterpret_cast<const float*>(deviceStage_ + floatsAt),
             reinterpret_cast<const uint32_t*>(deviceStage_ + masksAt), deviceOutputs_);
  check(cudaMemcpyAsync(hostOutputs_, deviceOutputs_, n * sizeof(sampling::SampleOutput), cudaMemcpyDeviceToHost, stream),
        "cudaMemcpyAsync (sampling outputs)");
}

void DeviceSampler::finish(const StepSampling& plan) const {
  if (plan.count > 0) std::memcpy(plan.out, hostOutputs_, static_cast<size_t>(plan.count) * sizeof(sampling::SampleOutput));
}

void sampleRowsForTest(const sampling::SampleRow* rows, int64_t numRows, int64_t vocab, sampling::SampleOutput* out) {
  if (numRows <= 0) return;
  const size_t rowBytes = static_cast<size_t>(vocab) * sizeof(float);
  float* logits = nullptr;
  cudaStream_t stream = nullptr;
  std::vector<int32_t> logitRows(static_cast<size_t>(numRows));
  try {
    check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    check(cudaMalloc(&logits, rowBytes * static_cast<size_t>(numRows)), "cudaMalloc (test logits)");
    for (int64_t i = 0; i < numRows; ++i) {
      check(cudaMemcpy(reinterpret_cast<char*>(logits) + static_cast<size_t>(i) * rowBytes, rows[i].logits, rowBytes,
                       cudaMemcpyHostToDevice),
            "cudaMemcpy (test logits)");
      logitRows[static_cast<size_t>(i)] = static_cast<int32_t>(i);
    }
    StepSampling plan;
    plan.rows = rows;
    plan.logitRows = logitRows.data();
    plan.count = numRows;
    plan.out = out;
    {
      DeviceSampler sampler;
      sampler.enqueue(stream, logits, vocab, plan);
      check(cudaStreamSynchronize(stream), "device sampling");
      sampler.finish(plan);
    }
  } catch (...) {
    if (logits) cudaFree(logits);
    if (stream) cudaStreamDestroy(stream);
    throw;
  }
  cudaFree(logits);
  cudaStreamDestroy(stream);
}

}  // namespace cuda
}  // namespace kiln
