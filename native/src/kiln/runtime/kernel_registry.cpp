#include "kiln/runtime/kernel_registry.h"

#include <cmath>
#include <utility>

#include "kiln/backends/cpu/ops/ops.h"
#ifdef KILN_WITH_CUDA
#include "kiln/backends/cuda/ops/register.h"
#endif

namespace kiln {

namespace {

std::string rowsName(RowsKind k) { return k == RowsKind::Tokens ? "tokens" : "logitRows"; }

std::string shapeText(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

OpBinding::OpBinding(std::string op, const Json* attrs, std::vector<ValueRef> inputs, std::vector<ValueRef> outputs,
                     std::map<std::string, WeightRef> weights, const ModelFacts& facts)
    : op_(std::move(op)),
      attrs_(attrs),
      inputs_(std::move(inputs)),
      outputs_(std::move(outputs)),
      weights_(std::move(weights)),
      facts_(facts) {}

void OpBinding::fail(const std::string& message) const { throw OpError(message); }

void OpBinding::expectArity(size_t numInputs, size_t numOutputs) const {
  if (inputs_.size() != numInputs || outputs_.size() != numOutputs) {
    fail("expects " + std::to_string(numInputs) + " input(s) and " + std::to_string(numOutputs) +
         " output(s), got " + std::to_string(inputs_.size()) + " and " + std::to_string(outputs_.size()));
  }
}

const WeightRef* OpBinding::optionalWeight(const std::string& slot) {
  auto it = weights_.find(slot);
  if (it == weights_.end()) return nullptr;
  usedWeights_.insert(slot);
  return &it->second;
}

const WeightRef& OpBinding::weight(const std::string& slot) {
  const WeightRef* w = optionalWeight(slot);
  if (!w) fail("is missing weight \"" + slot + "\"");
  return *w;
}

const Json* OpBinding::findAttr(const std::string& key) {
  if (!attrs_) return nullptr;
  const Json* v = attrs_->find(key);
  if (v) usedAttrs_.insert(key);
  return v;
}

double OpBinding::attrNumber(const std::string& key) {
  const Json* v = findAttr(key);
  if (!v) fail("is missing attribute \"" + key + "\"");
  if (!v->isNumber() || !std::isfinite(v->asNumber())) fail("attribute \"" + key + "\" must be a finite number");
  return v->asNumber();
}

double OpBinding::attrNumber(const std::string& key, double fallback) {
  if (!attrs_ || !attrs_->find(key)) return fallback;
  return attrNumber(key);
}

int64_t OpBinding::attrInt(const std::string& key, int64_t lo, int64_t hi) {
  const Json* v = findAttr(key);
  if (!v) fail("is missing attribute \"" + key + "\"");
  double d = v->isNumber() ? v->asNumber() : NAN;
  // The range check comes first so that the cast below is always defined.
  if (!(d >= static_cast<double>(lo) && d <= static_cast<double>(hi)) || d != std::floor(d)) {
    fail("attribute \"" + key + "\" must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return static_cast<int64_t>(d);
}

int64_t OpBinding::attrInt(const std::string& key, int64_t lo, int64_t hi, int64_t fallback) {
  if (!attrs_ || !attrs_->find(key)) return fallback;
  return attrInt(key, lo, hi);
}

bool OpBinding::attrBool(const std::string& key, bool fallback) {
  const Json* v = findAttr(key);
  if (!v) return fallback;
  if (!v->isBool()) fail("attribute \"" + key + "\" must be a boolean");
  return v->asBool();
}

std::string OpBinding::attrEnum(const std::string& key, const std::vector<std::string>& allowed,
                                const std::string& fallback) {
  const Json* v = findAttr(key);
  if (!v) return fallback;
  std::string list;
  for (const std::string& a : allowed) {
    if (v->isString() && v->asString() == a) return a;
    list += (list.empty() ? "\"" : ", \"") + a + "\"";
  }
  fail("attribute \"" + key + "\" must be one of " + list);
}

std::vector<std::string> OpBinding::unusedAttrs() const {
  std::vector<std::string> out;
  if (!attrs_) return out;
  for (const auto& m : attrs_->members()) {
    if (!usedAttrs_.count(m.first)) out.push_back(m.first);
  }
  return out;
}

std::vector<std::string> OpBinding::unusedWeights() const {
  std::vector<std::string> out;
  for (const auto& w : weights_) {
    if (!usedWeights_.count(w.first)) out.push_back(w.first);
  }
  return out;
}

void OpBinding::expectRows(const ValueRef& v, RowsKind kind, const std::string& role) const {
  if (v.rows != kind) {
    fail(role + " (value " + std::to_string(v.index) + " \"" + v.name + "\") must have rows \"" + rowsName(kind) +
         "\", not \"" + rowsName(v.rows) + "\"");
  }
}

void OpBinding::expectCols(const ValueRef& v, int64_t cols, const std::string& role) const {
  if (v.cols != cols) {
    fail(role + " (value " + std::to_string(v.index) + " \"" + v.name + "\") has " + std::to_string(v.cols) +
         " cols, expected " + std::to_string(cols));
  }
}

void OpBinding::expectShape(const WeightRef& w, const std::vector<int64_t>& shape, const std::string& slot) const {
  if (w.shape != shape) {
    fail("weight \"" + slot + "\" (\"" + w.name + "\") has shape " + shapeText(w.shape) + ", expected " +
         shapeText(shape));
  }
}

void OpBinding::expectDType(const WeightRef& w, DType dt, const std::string& slot) const {
  if (w.dtype != dt) {
    fail(std::string("weight \"") + slot + "\" (\"" + w.name + "\") must be " + dtypeName(dt) + ", not " +
         dtypeName(w.dtype));
  }
}

void KernelRegistry::registerOp(const std::string& op, const std::string& backend, DType dtype, OpFactory factory) {
  factories_[std::make_tuple(op, backend, dtype)] = std::move(factory);
}

const OpFactory* KernelRegistry::findOp(const std::string& op, const std::string& backend, DType dtype) const {
  auto it = factories_.find(std::make_tuple(op, backend, dtype));
  return it == factories_.end() ? nullptr : &it->second;
}

DType kernelDTypeOf(const std::map<std::string, WeightRef>& weights) {
  for (const char* slot : {"table", "weight"}) {
    auto it = weights.find(slot);
    if (it != weights.end()) return it->second.dtype;
  }
  return DType::F32;
}

const KernelRegistry& KernelRegistry::builtin() {
  static const KernelRegistry registry = [] {
    KernelRegistry r;
    ops::registerCpuOps(r);
#ifdef KILN_WITH_CUDA
    cuda::registerCudaOps(r);
#endif
    return r;
  }();
  return registry;
}

}  // namespace kiln
