// exports.testing's sampling functions: synchronous, test-only bindings to kiln/sampling, so that
// native/test/sampling.test.ts can compare the native samplers with @kiln/sampling's TS reference.
// Every argument is checked before anything runs; a value of the wrong kind throws a TypeError, a value
// out of range a RangeError, both naming the argument.
#include <napi.h>

#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kiln/runtime/backend.h"
#include "kiln/sampling/sampling.h"
#include "kiln/thread_pool.h"

namespace {

namespace ks = kiln::sampling;

// Largest vocabulary / row count accepted: keeps rows * vocab far inside int64 and allocations sane.
constexpr double kMaxCount = double(int64_t{1} << 31);

// Collects the first error; the caller throws it as a JS exception and returns.
struct Reader {
  Napi::Env env;
  std::string fn;
  bool failed = false;
  bool rangeError = false;
  std::string message;

  bool fail(const std::string& what, const std::string& msg, bool range) {
    if (!failed) {
      failed = true;
      rangeError = range;
      message = "testing." + fn + ": '" + what + "' " + msg;
    }
    return false;
  }
  Napi::Value raise() {
    if (rangeError) {
      Napi::RangeError::New(env, message).ThrowAsJavaScriptException();
    } else {
      Napi::TypeError::New(env, message).ThrowAsJavaScriptException();
    }
    return env.Undefined();
  }

  bool number(Napi::Object o, const char* key, double* out, const std::string& where, bool optional, double def) {
    Napi::Value v = o.Get(key);
    if (v.IsUndefined() && optional) {
      *out = def;
      return true;
    }
    if (!v.IsNumber()) return fail(where + key, "must be a number", false);
    *out = v.As<Napi::Number>().DoubleValue();
    return true;
  }
  bool integer(Napi::Object o, const char* key, int64_t* out, const std::string& where, bool optional, int64_t def,
               double min, double max = kMaxCount) {
    double d = 0;
    if (!number(o, key, &d, where, optional, static_cast<double>(def))) return false;
    if (!std::isfinite(d) || std::floor(d) != d || d < min || d > max) {
      return fail(where + key, "must be an integer in [" + std::to_string(int64_t(min)) + ", " +
                                   std::to_string(int64_t(max)) + "], got " + std::to_string(d), true);
    }
    *out = static_cast<int64_t>(d);
    return true;
  }
  template <typename T>
  bool typed(Napi::Value v, const std::string& what, napi_typedarray_type type, const char* typeName,
             std::vector<T>* out) {
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type) {
      return fail(what, std::string("must be a ") + typeName, false);
    }
    Napi::TypedArrayOf<T> a = v.As<Napi::TypedArrayOf<T>>();
    out->assign(a.Data(), a.Data() + a.ElementLength());
    return true;
  }
  // A seed: a non-negative safe-integer number or a bigint below 2^64.
  bool seed(Napi::Object o, const std::string& where, uint64_t* out) {
    Napi::Value v = o.Get("seed");
    if (v.IsUndefined()) {
      *out = 0;
      return true;
    }
    if (v.IsBigInt()) {
      bool lossless = false;
      *out = v.As<Napi::BigInt>().Uint64Value(&lossless);
      if (!lossless) return fail(where + "seed", "must be a bigint in [0, 2^64 - 1]", true);
      return true;
    }
    int64_t s = 0;
    if (!integer(o, "seed", &s, where, false, 0, 0, 9007199254740991.0)) return false;
    *out = static_cast<uint64_t>(s);
    return true;
  }

  // SamplingParams from a plain object (names as in kiln/sampling/sampling.h), then checkParams.
  bool params(Napi::Value value, const std::string& where, int64_t vocab, ks::SamplingParams* p) {
    if (!value.IsObject() || value.IsArray() || value.IsTypedArray()) return fail(where, "must be an object", false);
    Napi::Object o = value.As<Napi::Object>();
    const std::string at = where + ".";
    double d = 0;
    int64_t i = 0;
    if (!number(o, "temperature", &d, at, true, 0.0)) return false;
    p->temperature = static_cast<float>(d);
    if (!integer(o, "topK", &i, at, true, 0, 0)) return false;
    p->topK = static_cast<int32_t>(i);
    if (!number(o, "topP", &d, at, true, 1.0)) return false;
    p->topP = static_cast<float>(d);
    if (!number(o, "minP", &d, at, true, 0.0)) return false;
    p->minP = static_cast<float>(d);
    if (!number(o, "repetitionPenalty", &d, at, true, 1.0)) return false;
    p->repetitionPenalty = static_cast<float>(d);
    if (!number(o, "presencePenalty", &d, at, true, 0.0)) return false;
    p->presencePenalty = static_cast<float>(d);
    if (!number(o, "frequencyPenalty", &d, at, true, 0.0)) return false;
    p->frequencyPenalty = static_cast<float>(d);
    if (!integer(o, "noRepeatNgramSize", &i, at, true, 0, 0)) return false;
    p->noRepeatNgramSize = static_cast<int32_t>(i);
    if (!integer(o, "minTokens", &i, at, true, 0, 0)) return false;
    p->minTokens = static_cast<int32_t>(i);
    if (!integer(o, "endId", &i, at, true, -1, -1)) return false;
    p->endId = static_cast<int32_t>(i);
    if (!integer(o, "logprobs", &i, at, true, 0, 0, ks::kMaxLogprobs)) return false;
    p->logprobs = static_cast<int32_t>(i);
    if (!seed(o, at, &p->seed)) return false;
    Napi::Value bad = o.Get("badWords");
    if (!bad.IsUndefined()) {
      if (!bad.IsArray()) return fail(at + "badWords", "must be an array of Int32Arrays", false);
      Napi::Array words = bad.As<Napi::Array>();
      p->badWords.resize(words.Length());
      for (uint32_t w = 0; w < words.Length(); ++w) {
        if (!typed(words.Get(w), at + "badWords[" + std::to_string(w) + "]", napi_int32_array, "Int32Array",
                   &p->badWords[w])) {
          return false;
        }
      }
    }
    Napi::Value bias = o.Get("embeddingBias");
    if (!bias.IsUndefined()) {
      if (!bias.IsObject()) return fail(at + "embeddingBias", "must be { ids: Int32Array, values: Float32Array }", false);
      Napi::Object b = bias.As<Napi::Object>();
      if (!typed(b.Get("ids"), at + "embeddingBias.ids", napi_int32_array, "Int32Array", &p->biasIds)) return false;
      if (!typed(b.Get("values"), at + "embeddingBias.values", napi_float32_array, "Float32Array", &p->biasValues)) {
        return false;
      }
    }
    const std::string problem = ks::checkParams(*p, vocab);
    if (!problem.empty()) return fail(where, problem, true);
    return true;
  }

  // An optional allowed-token bitmask (`allowed`, Uint32Array of ceil(vocab / 32) words).
  bool mask(Napi::Object o, const std::string& where, int64_t vocab, std::vector<uint32_t>* out) {
    Napi::Value v = o.Get("allowed");
    out->clear();
    if (v.IsUndefined()) return true;
    if (!typed(v, where + "allowed", napi_uint32_array, "Uint32Array", out)) return false;
    if (static_cast<int64_t>(out->size()) != ks::tokenMaskWords(vocab)) {
      return fail(where + "allowed", "must hold ceil(vocab / 32) = " + std::to_string(ks::tokenMaskWords(vocab)) + " words", true);
    }
    return true;
  }

  // The sequence's tokens (optional Int32Array, default empty) and numPromptTokens (default: all of them).
  bool tokens(Napi::Object o, const std::string& where, int64_t vocab, std::vector<int32_t>* ids, int64_t* numPrompt) {
    Napi::Value v = o.Get("tokens");
    ids->clear();
    if (!v.IsUndefined() && !typed(v, where + "tokens", napi_int32_array, "Int32Array", ids)) return false;
    for (int32_t id : *ids) {
      if (id < 0 || id >= vocab) return fail(where + "tokens", "holds token " + std::to_string(id) + ", outside the vocabulary", true);
    }
    return integer(o, "numPromptTokens", numPrompt, where, true, static_cast<int64_t>(ids->size()), 0,
                   static_cast<double>(ids->size()));
  }
};

Napi::Object optionsArg(const Napi::CallbackInfo& info, Reader& r) {
  if (info.Length() < 1 || !info[0].IsObject() || info[0].IsArray() || info[0].IsTypedArray()) {
    r.fail("options", "must be one options object", false);
    return Napi::Object();
  }
  return info[0].As<Napi::Object>();
}

kiln::ThreadPool* poolFor(int threads) {
  static std::mutex mutex;
  static std::map<int, std::unique_ptr<kiln::ThreadPool>> pools;
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = pools[threads];
  if (!slot) slot.reset(new kiln::ThreadPool(threads));
  return slot.get();
}

// philox4x32(counter: Uint32Array(4), key: Uint32Array(2)): Uint32Array(4)
Napi::Value Philox(const Napi::CallbackInfo& info) {
  Reader r{info.Env(), "philox4x32"};
  std::vector<uint32_t> counter, key;
  if (info.Length() < 2) r.fail("counter", "and 'key' are required", false);
  if (!r.failed) r.typed(info[0], "counter", napi_uint32_array, "Uint32Array", &counter);
  if (!r.failed) r.typed(info[1], "key", napi_uint32_array, "Uint32Array", &key);
  if (!r.failed && counter.size() != 4) r.fail("counter", "must hold 4 words", true);
  if (!r.failed && key.size() != 2) r.fail("key", "must hold 2 words", true);
  if (r.failed) return r.raise();
  Napi::Uint32Array out = Napi::Uint32Array::New(info.Env(), 4);
  ks::philox4x32(counter.data(), key.data(), out.Data());
  return out;
}

// samplingUniform({ seed, step, sequenceIndex? }): number in [0, 1)
Napi::Value Uniform(const Napi::CallbackInfo& info) {
  Reader r{info.Env(), "samplingUniform"};
  Napi::Object o = optionsArg(info, r);
  uint64_t seed = 0;
  int64_t step = 0, index = 0;
  if (!r.failed) r.seed(o, "", &seed);
  if (!r.failed) r.integer(o, "step", &step, "", false, 0, 0, 9007199254740991.0);
  if (!r.failed) r.integer(o, "sequenceIndex", &index, "", true, 0, 0, 4294967295.0);
  if (r.failed) return r.raise();
  return Napi::Number::New(info.Env(), ks::uniform(seed, static_cast<uint64_t>(step), static_cast<uint32_t>(index)));
}

// processLogits({ logits, tokens?, numPromptTokens?, params }): { scores, probs, logprobs }
Napi::Value ProcessLogits(const Napi::CallbackInfo& info) {
  Reader r{info.Env(), "processLogits"};
  Napi::Object o = optionsArg(info, r);
  std::vector<float> logits;
  std::vector<int32_t> ids;
  int64_t numPrompt = 0;
  ks::SamplingParams params;
  if (!r.failed) r.typed(o.Get("logits"), "logits", napi_float32_array, "Float32Array", &logits);
  if (!r.failed && logits.empty()) r.fail("logits", "must not be empty", true);
  const int64_t vocab = static_cast<int64_t>(logits.size());
  if (!r.failed) r.tokens(o, "", vocab, &ids, &numPrompt);
  if (!r.failed) r.params(o.Get("params"), "params", vocab, &params);
  std::vector<uint32_t> allowed;
  if (!r.failed) r.mask(o, "", vocab, &allowed);
  if (r.failed) return r.raise();
  ks::SequenceTokens tokens{ids.data(), static_cast<int64_t>(ids.size()), numPrompt};
  if (!allowed.empty()) ks::applyTokenMask(logits.data(), vocab, allowed.data());
  ks::processLogits(logits.data(), vocab, tokens, params);
  Napi::Env env = info.Env();
  Napi::Float32Array scores = Napi::Float32Array::New(env, logits.size());
  Napi::Float32Array probs = Napi::Float32Array::New(env, logits.size());
  Napi::Float32Array logprobs = Napi::Float32Array::New(env, logits.size());
  std::copy(logits.begin(), logits.end(), scores.Data());
  ks::distributionRow(logits.data(), vocab, params, probs.Data());
  ks::logSoftmaxRow(logits.data(), vocab, logprobs.Data());
  Napi::Object result = Napi::Object::New(env);
  result.Set("scores", scores);
  result.Set("probs", probs);
  result.Set("logprobs", logprobs);
  return result;
}

// sampleRows({ logits: [rows * vocab], vocab, rows: [{ tokens?, numPromptTokens?, step, sequenceIndex?,
// params }], threads?, device? }): { tokens, logprobs, top: [{ ids, logprobs }] }. device "cuda": the
// CUDA backend's device sampler draws the rows instead (a build with CUDA and a GPU).
Napi::Value SampleRows(const Napi::CallbackInfo& info) {
  Reader r{info.Env(), "sampleRows"};
  Napi::Object o = optionsArg(info, r);
  std::vector<float> logits;
  int64_t vocab = 0, threads = 1;
  if (!r.failed) r.typed(o.Get("logits"), "logits", napi_float32_array, "Float32Array", &logits);
  if (!r.failed) r.integer(o, "vocab", &vocab, "", false, 0, 1);
  if (!r.failed) r.integer(o, "threads", &threads, "", true, 1, 1, 64);
  std::string device = "cpu";
  if (!r.failed) {
    Napi::Value d = o.Get("device");
    if (!d.IsUndefined() && !(d.IsString() && (d.As<Napi::String>().Utf8Value() == "cpu" || d.As<Napi::String>().Utf8Value() == "cuda"))) {
      r.fail("device", "must be \"cpu\" or \"cuda\"", true);
    } else if (d.IsString()) {
      device = d.As<Napi::String>().Utf8Value();
    }
  }
  Napi::Value rowsValue = r.failed ? Napi::Value() : o.Get("rows");
  if (!r.failed && !rowsValue.IsArray()) r.fail("rows", "must be an array", false);
  if (r.failed) return r.raise();
  Napi::Array rowsArray = rowsValue.As<Napi::Array>();
  const int64_t numRows = rowsArray.Length();
  if (static_cast<int64_t>(logits.size()) != numRows * vocab) {
    r.fail("logits", "must hold rows.length * vocab = " + std::to_string(numRows * vocab) + " floats, got " +
                         std::to_string(logits.size()), true);
    return r.raise();
  }
  std::vector<ks::SamplingParams> params(numRows);
  std::vector<std::vector<int32_t>> ids(numRows);
  std::vector<std::vector<uint32_t>> masks(numRows);
  std::vector<ks::SampleRow> rows(numRows);
  for (int64_t i = 0; i < numRows && !r.failed; ++i) {
    const std::string where = "rows[" + std::to_string(i) + "]";
    Napi::Value v = rowsArray.Get(static_cast<uint32_t>(i));
    if (!v.IsObject()) {
      r.fail(where, "must be an object", false);
      break;
    }
    Napi::Object row = v.As<Napi::Object>();
    int64_t numPrompt = 0, step = 0, index = 0;
    if (!r.tokens(row, where + ".", vocab, &ids[i], &numPrompt)) break;
    if (!r.integer(row, "step", &step, where + ".", false, 0, 0, 9007199254740991.0)) break;
    if (!r.integer(row, "sequenceIndex", &index, where + ".", true, 0, 0, 4294967295.0)) break;
    if (!r.params(row.Get("params"), where + ".params", vocab, &params[i])) break;
    if (!r.mask(row, where + ".", vocab, &masks[i])) break;
    rows[i].allowed = masks[i].empty() ? nullptr : masks[i].data();
    rows[i].logits = logits.data() + i * vocab;
    rows[i].tokens = ks::SequenceTokens{ids[i].data(), static_cast<int64_t>(ids[i].size()), numPrompt};
    rows[i].params = &params[i];
    rows[i].step = static_cast<uint64_t>(step);
    rows[i].sequenceIndex = static_cast<uint32_t>(index);
  }
  if (r.failed) return r.raise();
  std::vector<ks::SampleOutput> out(numRows);
  if (device == "cuda") {
    try {
      kiln::sampleRowsOnCuda(rows.data(), numRows, vocab, out.data());
    } catch (const std::exception& e) {
      Napi::Error::New(info.Env(), std::string("testing.sampleRows: ") + e.what()).ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
  } else {
    ks::sampleRows(rows.data(), numRows, vocab, out.data(), threads > 1 ? poolFor(static_cast<int>(threads)) : nullptr);
  }

  Napi::Env env = info.Env();
  Napi::Int32Array tokens = Napi::Int32Array::New(env, numRows);
  Napi::Float32Array logprobs = Napi::Float32Array::New(env, numRows);
  Napi::Array top = Napi::Array::New(env, numRows);
  for (int64_t i = 0; i < numRows; ++i) {
    tokens.Data()[i] = out[i].token;
    logprobs.Data()[i] = out[i].logprob;
    Napi::Int32Array topIds = Napi::Int32Array::New(env, out[i].numTop);
    Napi::Float32Array topLogprobs = Napi::Float32Array::New(env, out[i].numTop);
    for (int32_t k = 0; k < out[i].numTop; ++k) {
      topIds.Data()[k] = out[i].topIds[k];
      topLogprobs.Data()[k] = out[i].topLogprobs[k];
    }
    Napi::Object entry = Napi::Object::New(env);
    entry.Set("ids", topIds);
    entry.Set("logprobs", topLogprobs);
    top.Set(static_cast<uint32_t>(i), entry);
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("tokens", tokens);
  result.Set("logprobs", logprobs);
  result.Set("top", top);
  return result;
}

}  // namespace

void InitSamplingTesting(Napi::Env env, Napi::Object exports) {
  Napi::Value existing = exports.Get("testing");
  if (!existing.IsObject()) return;  // InitTesting creates exports.testing; it runs first (addon.cpp)
  Napi::Object t = existing.As<Napi::Object>();
  t.Set("philox4x32", Napi::Function::New(env, Philox, "philox4x32"));
  t.Set("samplingUniform", Napi::Function::New(env, Uniform, "samplingUniform"));
  t.Set("processLogits", Napi::Function::New(env, ProcessLogits, "processLogits"));
  t.Set("sampleRows", Napi::Function::New(env, SampleRows, "sampleRows"));
}
