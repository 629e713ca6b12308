#pragma once
// The (op, backend, dtype) -> kernel adapter registry. An adapter ("OpFactory") runs once, at load time:
// it checks one op of the engine header against its weights and values and returns a bound callable
// that holds raw pointers only, so a forward step is a loop over closures with no lookups or JSON.
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "kiln/dtype.h"
#include "kiln/format/json.h"
#include "kiln/backends/cpu/kernels/kernels.h"
#include "kiln/runtime/step.h"

namespace kiln {

// What every bound op receives per step.
struct StepRuntime {
  KernelEnv env;
  const StepContext* step = nullptr;  // host view of the step
  const void* device = nullptr;       // the backend's own view of it (CUDA: a cuda::DeviceStep), or null
};

class Backend;
class ParallelGroups;

enum class RowsKind : uint8_t { Tokens, LogitRows };

// An activation, resolved to its place in the arena. Its row count is the step's T or R.
struct ValueRef {
  int32_t index = -1;
  std::string name;
  RowsKind rows = RowsKind::Tokens;
  int64_t cols = 0;
  int64_t rowStride = 0;
  DType dtype = DType::F32;  // the header's value dtype (float32 unless a cuda engine says otherwise)
  int64_t byteOffset = 0;    // the header's offset: where element (0, 0) sits in the arena
  float* data = nullptr;     // host address of element (0, 0); null where the arena is device memory

  int64_t numRows(const StepContext& step) const {
    return rows == RowsKind::Tokens ? step.numTokens : step.numLogitRows;
  }
};

// A weight, resolved to its bytes in the memory map.
struct WeightRef {
  int32_t index = -1;
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  int64_t groupSize = 0;  // int4 weights: input features per scale (EngineWeight::groupSize); else 0
  const void* data = nullptr;
};

// The engine-wide facts an adapter may check an op against.
struct ModelFacts {
  int64_t vocabSize = 0;
  int64_t maxBatchSize = 0;
  int64_t maxSeqLen = 0;
  int64_t maxNumTokens = 0;
  int64_t maxLogitRows = 0;
  int64_t kvNumLayers = 0;
  int64_t kvNumKvHeads = 0;
  int64_t kvHeadDim = 0;
  int64_t kvTokensPerBlock = 0;
  DType activationDType = DType::F32;  // the KV cache's element type (and main weights' on cuda)
  Backend* backend = nullptr;          // the backend binding the ops (adapters of that backend may downcast)
  ParallelGroups* parallel = nullptr;  // the communicators of a tp/pp engine (runtime/parallel.h); null for one rank
};

// Thrown by adapters; the engine prefixes the op's index and name.
class OpError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One op of the header with its references resolved. The accessors throw OpError naming the operand,
// and record which attributes and weights were consumed so that anything left over (an attribute or
// weight slot the adapter does not know) can be refused.
class OpBinding {
 public:
  OpBinding(std::string op, const Json* attrs, std::vector<ValueRef> inputs, std::vector<ValueRef> outputs,
            std::map<std::string, WeightRef> weights, const ModelFacts& facts);

  const std::string& op() const { return op_; }
  const ModelFacts& facts() const { return facts_; }

  // Refuses any other number of inputs/outputs.
  void expectArity(size_t numInputs, size_t numOutputs) const;
  const ValueRef& input(size_t i) const { return inputs_.at(i); }
  const ValueRef& output(size_t i) const { return outputs_.at(i); }

  const WeightRef& weight(const std::string& slot);          // required
  const WeightRef* optionalWeight(const std::string& slot);  // null when absent

  double attrNumber(const std::string& key);  // required, finite
  double attrNumber(const std::string& key, double fallback);
  int64_t attrInt(const std::string& key, int64_t lo, int64_t hi);  // required
  int64_t attrInt(const std::string& key, int64_t lo, int64_t hi, int64_t fallback);
  bool attrBool(const std::string& key, bool fallback);
  // One of `allowed` (fallback when absent).
  std::string attrEnum(const std::string& key, const std::vector<std::string>& allowed, const std::string& fallback);

  // Names of attributes / weight slots present in the header but never asked for.
  std::vector<std::string> unusedAttrs() const;
  std::vector<std::string> unusedWeights() const;

  // Shape checks shared by adapters.
  void expectRows(const ValueRef& v, RowsKind kind, const std::string& role) const;
  void expectCols(const ValueRef& v, int64_t cols, const std::string& role) const;
  void expectShape(const WeightRef& w, const std::vector<int64_t>& shape, const std::string& slot) const;
  void expectDType(const WeightRef& w, DType dt, const std::string& slot) const;

  [[noreturn]] void fail(const std::string& message) const;

 private:
  const Json* findAttr(const std::string& key);

  std::string op_;
  const Json* attrs_;  // an object, or null when the op has none
  std::vector<ValueRef> inputs_;
  std::vector<ValueRef> outputs_;
  std::map<std::string, WeightRef> weights_;
  ModelFacts facts_;
  std::set<std::string> usedAttrs_;
  std::set<std::string> usedWeights_;
};

using BoundOp = std::function<void(const StepRuntime&)>;
using OpFactory = std::function<BoundOp(OpBinding&)>;

class KernelRegistry {
 public:
  void registerOp(const std::string& op, const std::string& backend, DType dtype, OpFactory factory);
  // Null when nothing is registered for the key.
  const OpFactory* findOp(const std::string& op, const std::string& backend, DType dtype) const;

  // Every op Kiln ships, registered once (see kernel_registry.cpp for the table).
  static const KernelRegistry& builtin();

 private:
  std::map<std::tuple<std::string, std::string, DType>, OpFactory> factories_;
};

// Which weight slot keys the kernel choice: the op's main weight (`table` or `weight`) or float32.
DType kernelDTypeOf(const std::map<std::string, WeightRef>& weights);

}  // namespace kiln
