// loadEngine() and the NativeEngine object (native/lib/types.ts). Loading runs on a libuv worker thread;
// generation runs on the engine's executor thread (kiln/runtime/executor.h). The executor hands each
// iteration's events to one thread-safe function call, so JavaScript is entered at most once per
// iteration whatever the number of requests; there they are dispatched to `generate` calls (their
// onToken and promise) and, in one call, to the listener set by setEventListener.
//
// Lifetime: a Session holds the engine, its executor and the JS-side bookkeeping. dispose() (or
// shutdown()) stops the executor on a worker thread; the requests still running then finish first
// (dispose, shutdown()) or are cancelled (shutdown({cancel: true})), and their events still reach
// JavaScript: the thread-safe function is released only after the executor's thread has joined. The
// thread-safe function is referenced (keeps Node alive) only while requests are in flight.
#include <napi.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>

#include "kiln/comm/world.h"
#include "kiln/runtime/engine.h"
#include "kiln/runtime/executor.h"

namespace {

using EnginePtr = std::shared_ptr<kiln::Engine>;

Napi::Value Rejected(Napi::Env env, Napi::Value error) {
  Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
  d.Reject(error);
  return d.Promise();
}

Napi::Value Rejected(Napi::Env env, const std::string& message) {
  return Rejected(env, Napi::Error::New(env, message).Value());
}

Napi::Value RejectedTypeError(Napi::Env env, const std::string& message) {
  return Rejected(env, Napi::TypeError::New(env, message).Value());
}

// Reads obj[key]; a throwing getter leaves its exception in *error and returns an empty value.
Napi::Value GetProperty(Napi::Object obj, const char* key, Napi::Value* error) {
  Napi::Env env = obj.Env();
  Napi::Value v = obj.Get(key);
  if (env.IsExceptionPending()) {
    *error = env.GetAndClearPendingException().Value();
    return Napi::Value();
  }
  return v;
}

// An optional integer option: undefined keeps *out; anything else must be an integer in [lo, hi].
bool ReadInteger(Napi::Value v, double lo, double hi, int64_t* out) {
  if (v.IsUndefined()) return true;
  if (!v.IsNumber()) return false;
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= lo && d <= hi) || d != std::floor(d)) return false;
  *out = static_cast<int64_t>(d);
  return true;
}

bool ReadBool(Napi::Value v, bool* out) {
  if (v.IsUndefined()) return true;
  if (!v.IsBoolean()) return false;
  *out = v.As<Napi::Boolean>().Value();
  return true;
}

Napi::Object InfoObject(Napi::Env env, const kiln::EngineInfo& i) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("formatVersion", Napi::Number::New(env, i.formatVersion));
  o.Set("backend", Napi::String::New(env, i.backend));
  o.Set("isa", Napi::String::New(env, i.isa));
  if (!i.computeCapability.empty()) o.Set("computeCapability", Napi::String::New(env, i.computeCapability));
  o.Set("activationDType", Napi::String::New(env, kiln::dtypeName(i.activationDType)));
  o.Set("device", Napi::String::New(env, i.device));
  o.Set("weightBytes", Napi::Number::New(env, static_cast<double>(i.weightBytes)));
  o.Set("kvCacheBytes", Napi::Number::New(env, static_cast<double>(i.kvCacheBytes)));
  o.Set("kvCacheTokens", Napi::Number::New(env, static_cast<double>(i.kvCacheTokens)));
  o.Set("maxBatchSize", Napi::Number::New(env, static_cast<double>(i.maxBatchSize)));
  o.Set("maxSeqLen", Napi::Number::New(env, static_cast<double>(i.maxSeqLen)));
  o.Set("maxNumTokens", Napi::Number::New(env, static_cast<double>(i.maxNumTokens)));
  o.Set("maxLogitRows", Napi::Number::New(env, static_cast<double>(i.maxLogitRows)));
  o.Set("maxBeamWidth", Napi::Number::New(env, static_cast<double>(i.maxBeamWidth)));
  o.Set("vocabSize", Napi::Number::New(env, static_cast<double>(i.vocabSize)));
  o.Set("modelJson", Napi::String::New(env, i.modelJson));
  o.Freeze();
  return o;
}

Napi::Object MappingObject(Napi::Env env, const kiln::ParallelMapping& m) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("tpSize", Napi::Number::New(env, m.tpSize));
  o.Set("ppSize", Napi::Number::New(env, m.ppSize));
  o.Set("rank", Napi::Number::New(env, m.rank));
  o.Freeze();
  return o;
}

Napi::Float32Array ToFloat32Array(Napi::Env env, const std::vector<float>& v) {
  Napi::Float32Array a = Napi::Float32Array::New(env, v.size());
  if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * sizeof(float));
  return a;
}

Napi::Int32Array ToInt32Array(Napi::Env env, const std::vector<int32_t>& v) {
  Napi::Int32Array a = Napi::Int32Array::New(env, v.size());
  if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * sizeof(int32_t));
  return a;
}

Napi::Number Num(Napi::Env env, double v) { return Napi::Number::New(env, v); }

Napi::Object IterationStatsObject(Napi::Env env, const kiln::IterationStats& s) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("iteration", Num(env, double(s.iteration)));
  o.Set("timestampMs", Num(env, s.timestampMs));
  o.Set("iterationMs", Num(env, s.iterationMs));
  o.Set("activeRequests", Num(env, double(s.activeRequests)));
  o.Set("waitingRequests", Num(env, double(s.waitingRequests)));
  o.Set("contextRequests", Num(env, double(s.contextRequests)));
  o.Set("generationRequests", Num(env, double(s.generationRequests)));
  o.Set("numTokens", Num(env, double(s.numTokens)));
  o.Set("numContextTokens", Num(env, double(s.numContextTokens)));
  o.Set("numGenerationTokens", Num(env, double(s.numGenerationTokens)));
  o.Set("preempted", Num(env, double(s.preempted)));
  o.Set("kvBlocksTotal", Num(env, double(s.kvBlocksTotal)));
  o.Set("kvBlocksUsed", Num(env, double(s.kvBlocksUsed)));
  o.Set("kvBlocksFree", Num(env, double(s.kvBlocksFree)));
  o.Set("kvBlocksCached", Num(env, double(s.kvBlocksCached)));
  return o;
}

Napi::Object RequestStatsObject(Napi::Env env, const kiln::RequestStats& s) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("queueTimeMs", Num(env, s.queueTimeMs));
  o.Set("timeToFirstTokenMs", Num(env, s.timeToFirstTokenMs));
  o.Set("timePerOutputTokenMs", Num(env, s.timePerOutputTokenMs));
  o.Set("totalTimeMs", Num(env, s.totalTimeMs));
  o.Set("numPromptTokens", Num(env, double(s.numPromptTokens)));
  o.Set("numOutputTokens", Num(env, double(s.numOutputTokens)));
  o.Set("reusedBlocks", Num(env, double(s.reusedBlocks)));
  o.Set("preemptions", Num(env, double(s.preemptions)));
  return o;
}

// An optional finite number option: undefined keeps *out.
bool ReadFinite(Napi::Value v, double* out) {
  if (v.IsUndefined()) return true;
  if (!v.IsNumber()) return false;
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) return false;
  *out = d;
  return true;
}

// An optional array of Int32Arrays (token-id sequences), at most `maxCount` of at most 256 ids each.
bool ReadSequences(Napi::Value v, size_t maxCount, std::vector<std::vector<int32_t>>* out) {
  if (v.IsUndefined()) return true;
  if (!v.IsArray()) return false;
  Napi::Array a = v.As<Napi::Array>();
  if (a.Length() > maxCount) return false;
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value item = a.Get(i);
    if (item.Env().IsExceptionPending()) return false;
    if (!item.IsTypedArray() || item.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) return false;
    Napi::Int32Array ids = item.As<Napi::Int32Array>();
    if (ids.ElementLength() == 0 || ids.ElementLength() > 256) return false;
    out->emplace_back(ids.Data(), ids.Data() + ids.ElementLength());
  }
  return true;
}

// The sampling and beam search fields of a request (NativeSamplingFields in native/lib/types.ts).
// Ranges the executor checks again (kiln::sampling::checkParams) are only type-checked here.
bool ParseSampling(Napi::Object req, kiln::Request* request, Napi::Value* thrown, std::string* typeError) {
  kiln::sampling::SamplingParams& p = request->sampling;
  struct FloatField {
    const char* key;
    float* out;
  };
  for (FloatField f : {FloatField{"temperature", &p.temperature}, FloatField{"topP", &p.topP}, FloatField{"minP", &p.minP},
                       FloatField{"repetitionPenalty", &p.repetitionPenalty}, FloatField{"presencePenalty", &p.presencePenalty},
                       FloatField{"frequencyPenalty", &p.frequencyPenalty}}) {
    Napi::Value v = GetProperty(req, f.key, thrown);
    if (!thrown->IsEmpty()) return false;
    double d = *f.out;
    if (!ReadFinite(v, &d)) {
      *typeError = std::string("request.") + f.key + " must be a finite number";
      return false;
    }
    *f.out = static_cast<float>(d);
  }
  struct IntField {
    const char* key;
    double lo, hi;
    int64_t* out;
  };
  int64_t topK = 0, noRepeat = 0, minTokens = 0, logprobs = 0, sequenceIndex = 0;
  for (IntField f : {IntField{"topK", 0, 2147483647.0, &topK}, IntField{"noRepeatNgramSize", 0, 2147483647.0, &noRepeat},
                     IntField{"minTokens", 0, 2147483647.0, &minTokens}, IntField{"logprobs", 0, kiln::sampling::kMaxLogprobs, &logprobs},
                     IntField{"sequenceIndex", 0, 4294967295.0, &sequenceIndex}, IntField{"beamWidth", 1, 65536, &request->beamWidth},
                     IntField{"numReturnSequences", 1, 65536, &request->numReturnSequences}}) {
    Napi::Value v = GetProperty(req, f.key, thrown);
    if (!thrown->IsEmpty()) return false;
    if (!ReadInteger(v, f.lo, f.hi, f.out)) {
      *typeError = std::string("request.") + f.key + " must be an integer in [" + std::to_string(int64_t(f.lo)) + ", " +
                   std::to_string(int64_t(f.hi)) + "]";
      return false;
    }
  }
  p.topK = static_cast<int32_t>(topK);
  p.noRepeatNgramSize = static_cast<int32_t>(noRepeat);
  p.minTokens = static_cast<int32_t>(minTokens);
  p.logprobs = static_cast<int32_t>(logprobs);
  request->sequenceIndex = static_cast<uint32_t>(sequenceIndex);
  Napi::Value v = GetProperty(req, "lengthPenalty", thrown);
  if (!thrown->IsEmpty()) return false;
  if (!ReadFinite(v, &request->lengthPenalty)) {
    *typeError = "request.lengthPenalty must be a finite number";
    return false;
  }
  v = GetProperty(req, "earlyStopping", thrown);
  if (!thrown->IsEmpty()) return false;
  if (v.IsBoolean()) {
    request->earlyStopping = v.As<Napi::Boolean>().Value() ? kiln::EarlyStopping::True : kiln::EarlyStopping::Heuristic;
  } else if (v.IsString() && v.As<Napi::String>().Utf8Value() == "never") {
    request->earlyStopping = kiln::EarlyStopping::Never;
  } else if (!v.IsUndefined()) {
    *typeError = "request.earlyStopping must be true, false or \"never\"";
    return false;
  }
  v = GetProperty(req, "badWords", thrown);
  if (!thrown->IsEmpty()) return false;
  if (!ReadSequences(v, 1024, &p.badWords)) {
    if (req.Env().IsExceptionPending()) *thrown = req.Env().GetAndClearPendingException().Value();
    *typeError = "request.badWords must be an array of at most 1024 Int32Arrays of 1 to 256 token ids";
    return false;
  }
  v = GetProperty(req, "stopTokenSequences", thrown);
  if (!thrown->IsEmpty()) return false;
  if (!ReadSequences(v, 64, &request->stopTokenSequences)) {
    if (req.Env().IsExceptionPending()) *thrown = req.Env().GetAndClearPendingException().Value();
    *typeError = "request.stopTokenSequences must be an array of at most 64 Int32Arrays of 1 to 256 token ids";
    return false;
  }
  Napi::Value ids = GetProperty(req, "biasIds", thrown);
  if (!thrown->IsEmpty()) return false;
  Napi::Value values = GetProperty(req, "biasValues", thrown);
  if (!thrown->IsEmpty()) return false;
  if (!ids.IsUndefined() || !values.IsUndefined()) {
    if (!ids.IsTypedArray() || ids.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array || !values.IsTypedArray() ||
        values.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array ||
        ids.As<Napi::TypedArray>().ElementLength() != values.As<Napi::TypedArray>().ElementLength()) {
      *typeError = "request.biasIds (Int32Array) and request.biasValues (Float32Array) must be given together, of one length";
      return false;
    }
    Napi::Int32Array i32 = ids.As<Napi::Int32Array>();
    Napi::Float32Array f32 = values.As<Napi::Float32Array>();
    p.biasIds.assign(i32.Data(), i32.Data() + i32.ElementLength());
    p.biasValues.assign(f32.Data(), f32.Data() + f32.ElementLength());
  }
  return true;
}

// One {logprob, top: [{token, logprob}]} per token (the shape of @kiln/sampling's referenceLogprobs).
Napi::Array LogprobsArray(Napi::Env env, const std::vector<kiln::TokenLogprobs>& logprobs) {
  Napi::Array a = Napi::Array::New(env, logprobs.size());
  for (size_t i = 0; i < logprobs.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("logprob", Num(env, logprobs[i].logprob));
    Napi::Array top = Napi::Array::New(env, logprobs[i].topIds.size());
    for (size_t k = 0; k < logprobs[i].topIds.size(); ++k) {
      Napi::Object t = Napi::Object::New(env);
      t.Set("token", Num(env, logprobs[i].topIds[k]));
      t.Set("logprob", Num(env, logprobs[i].topLogprobs[k]));
      top.Set(uint32_t(k), t);
    }
    o.Set("top", top);
    a.Set(uint32_t(i), o);
  }
  return a;
}

Napi::Array SequencesArray(Napi::Env env, const std::vector<kiln::SequenceResult>& sequences) {
  Napi::Array a = Napi::Array::New(env, sequences.size());
  for (size_t i = 0; i < sequences.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("outputIds", ToInt32Array(env, sequences[i].outputIds));
    o.Set("finishReason", Napi::String::New(env, kiln::finishReasonName(sequences[i].finishReason)));
    o.Set("score", Num(env, sequences[i].score));
    a.Set(uint32_t(i), o);
  }
  return a;
}

// An allowed-token bitmask: a non-empty Uint32Array of at most 2^22 words (a vocabulary of 2^27 tokens;
// the bound keeps a bad argument from allocating without limit before the executor checks its length).
bool ReadTokenMask(Napi::Value v, std::vector<uint32_t>* out) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array) return false;
  Napi::Uint32Array words = v.As<Napi::Uint32Array>();
  if (words.ElementLength() == 0 || words.ElementLength() > (size_t(1) << 22)) return false;
  out->assign(words.Data(), words.Data() + words.ElementLength());
  return true;
}

// Reads a request object (NativeGenerateRequest / NativeExecutorRequest). On failure returns false with
// *thrown set (a getter threw) or *typeError set.
bool ParseRequest(Napi::Object req, kiln::Request* request, Napi::Value* thrown, std::string* typeError) {
  Napi::Value ids = GetProperty(req, "inputIds", thrown);
  if (!thrown->IsEmpty()) return false;
  if (!ids.IsTypedArray() || ids.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    *typeError = "request.inputIds must be an Int32Array";
    return false;
  }
  Napi::Int32Array idArray = ids.As<Napi::Int32Array>();
  request->inputIds.assign(idArray.Data(), idArray.Data() + idArray.ElementLength());

  Napi::Value maxTokens = GetProperty(req, "maxTokens", thrown);
  if (!thrown->IsEmpty()) return false;
  request->maxTokens = 0;
  if (maxTokens.IsUndefined() || !ReadInteger(maxTokens, 1, 2147483647.0, &request->maxTokens)) {
    *typeError = "request.maxTokens must be an integer >= 1";
    return false;
  }
  Napi::Value endId = GetProperty(req, "endId", thrown);
  if (!thrown->IsEmpty()) return false;
  if (!ReadInteger(endId, -1, 2147483647.0, &request->endId)) {
    *typeError = "request.endId must be an integer >= -1 (-1 for none)";
    return false;
  }
  Napi::Value ctx = GetProperty(req, "returnContextLogits", thrown);
  if (!thrown->IsEmpty()) return false;
  if (!ReadBool(ctx, &request->returnContextLogits)) {
    *typeError = "request.returnContextLogits must be a boolean";
    return false;
  }
  Napi::Value gen = GetProperty(req, "returnGenerationLogits", thrown);
  if (!thrown->IsEmpty()) return false;
  if (!ReadBool(gen, &request->returnGenerationLogits)) {
    *typeError = "request.returnGenerationLogits must be a boolean";
    return false;
  }
  Napi::Value seed = GetProperty(req, "seed", thrown);
  if (!thrown->IsEmpty()) return false;
  if (seed.IsBigInt()) {
    bool lossless = false;
    request->seed = seed.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) {
      *typeError = "request.seed must be an integer in [0, 2^64)";
      return false;
    }
  } else {
    int64_t seedValue = 0;
    if (!ReadInteger(seed, 0, 9007199254740991.0, &seedValue)) {
      *typeError = "request.seed must be an integer in [0, 2^53) or a bigint below 2^64";
      return false;
    }
    request->seed = static_cast<uint64_t>(seedValue);
  }
  Napi::Value mask = GetProperty(req, "tokenMask", thrown);
  if (!thrown->IsEmpty()) return false;
  if (!mask.IsUndefined()) {
    // The executor checks its length against the vocabulary (Executor::validate).
    if (!ReadTokenMask(mask, &request->tokenMask)) {
      *typeError = "request.tokenMask must be a Uint32Array of ceil(vocabSize / 32) words";
      return false;
    }
  }
  return ParseSampling(req, request, thrown, typeError);
}

// ---------------------------------------------------------------------------------------------------

struct Session;
void DeliverReport(Napi::Env env, Napi::Function, std::shared_ptr<Session>* session, kiln::IterationReport* report);
using EventChannel = Napi::TypedThreadSafeFunction<std::shared_ptr<Session>, kiln::IterationReport, DeliverReport>;

// One `generate` call in flight.
struct GenerateCall {
  explicit GenerateCall(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise::Deferred deferred;
  Napi::FunctionReference onToken;
  bool returnContextLogits = false;
  bool returnGenerationLogits = false;
  std::vector<int32_t> outputIds;
  std::vector<float> contextLogits;
  std::vector<float> generationLogits;
  Napi::Reference<Napi::Value> callbackError;
  bool callbackFailed = false;
};

struct Session {
  EnginePtr engine;
  std::unique_ptr<kiln::Executor> executor;
  EventChannel channel;      // set on the JS thread before the first request
  bool channelOpen = false;
  bool channelFinalized = false;
  // shutdown() promises: resolved when the channel is finalized, i.e. after its last queued event.
  std::vector<Napi::Promise::Deferred> shutdownWaiters;
  // The rest lives on the JS thread only.
  bool stopped = false;  // shutdown or dispose called: no more requests
  std::unordered_map<kiln::RequestId, std::unique_ptr<GenerateCall>> generateCalls;
  Napi::FunctionReference listener;
  int64_t inFlight = 0;

  void started(Napi::Env env) {
    if (inFlight++ == 0 && channelOpen) channel.Ref(env);
  }
  void ended(Napi::Env env) {
    if (--inFlight == 0 && channelOpen) channel.Unref(env);
  }
};

void SettleGenerate(Napi::Env env, GenerateCall& call, const kiln::RequestEvent& e) {
  if (call.callbackFailed) {
    call.deferred.Reject(call.callbackError.Value());
    return;
  }
  if (e.finishReason == kiln::FinishReason::Error) {
    call.deferred.Reject(Napi::Error::New(env, e.error).Value());
    return;
  }
  if (e.finishReason == kiln::FinishReason::Cancelled) {
    call.deferred.Reject(Napi::Error::New(env, "the request was cancelled: the engine was shut down").Value());
    return;
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("outputIds", ToInt32Array(env, call.outputIds));
  out.Set("finishReason", Napi::String::New(env, kiln::finishReasonName(e.finishReason)));
  if (call.returnContextLogits) out.Set("contextLogits", ToFloat32Array(env, call.contextLogits));
  if (call.returnGenerationLogits) out.Set("generationLogits", ToFloat32Array(env, call.generationLogits));
  out.Set("stats", RequestStatsObject(env, e.stats));
  call.deferred.Resolve(out);
}

// On the JS thread: one iteration's events.
void DeliverReport(Napi::Env env, Napi::Function, std::shared_ptr<Session>* sessionPtr, kiln::IterationReport* raw) {
  std::unique_ptr<kiln::IterationReport> report(raw);
  if (env == nullptr || sessionPtr == nullptr) return;  // the environment is going away
  Session& session = **sessionPtr;
  Napi::HandleScope scope(env);
  Napi::Array forListener = Napi::Array::New(env);
  uint32_t listed = 0;
  for (kiln::RequestEvent& e : report->events) {
    const bool finished = e.finishReason != kiln::FinishReason::None;
    auto found = session.generateCalls.find(e.id);
    if (found != session.generateCalls.end()) {
      GenerateCall& call = *found->second;
      call.outputIds.insert(call.outputIds.end(), e.newTokens.begin(), e.newTokens.end());
      if (call.returnContextLogits && !e.contextLogits.empty()) call.contextLogits = std::move(e.contextLogits);
      if (call.returnGenerationLogits) {
        call.generationLogits.insert(call.generationLogits.end(), e.generationLogits.begin(), e.generationLogits.end());
      }
      if (!call.onToken.IsEmpty()) {
        for (int32_t token : e.newTokens) {
          if (call.callbackFailed) break;
          call.onToken.Call({Napi::Number::New(env, token)});
          if (env.IsExceptionPending()) {
            Napi::Value thrown = env.GetAndClearPendingException().Value();
            // Node-API version 8 can only reference objects; a thrown primitive becomes an Error.
            if (!thrown.IsObject()) thrown = Napi::Error::New(env, "onToken threw a non-Error value").Value();
            call.callbackError = Napi::Reference<Napi::Value>::New(thrown, 1);
            call.callbackFailed = true;
            // A throwing onToken ends the generation early; the promise then rejects with its error.
            if (session.executor) session.executor->cancel(e.id);
          }
        }
      }
      if (finished) {
        SettleGenerate(env, call, e);
        session.generateCalls.erase(found);
        session.ended(env);
      }
      continue;
    }
    if (finished) session.ended(env);
    if (session.listener.IsEmpty()) continue;
    Napi::Object o = Napi::Object::New(env);
    o.Set("id", Num(env, double(e.id)));
    o.Set("outputIds", ToInt32Array(env, e.newTokens));
    if (finished) {
      o.Set("finishReason", Napi::String::New(env, kiln::finishReasonName(e.finishReason)));
      if (!e.error.empty()) o.Set("error", Napi::String::New(env, e.error));
      o.Set("stats", RequestStatsObject(env, e.stats));
    }
    if (!e.contextLogits.empty()) o.Set("contextLogits", ToFloat32Array(env, e.contextLogits));
    if (!e.generationLogits.empty()) o.Set("generationLogits", ToFloat32Array(env, e.generationLogits));
    if (!e.logprobs.empty()) o.Set("logprobs", LogprobsArray(env, e.logprobs));
    if (e.stopLength > 0) o.Set("stopLength", Num(env, double(e.stopLength)));
    if (!e.sequences.empty()) o.Set("sequences", SequencesArray(env, e.sequences));
    if (!e.beams.empty()) {
      Napi::Array beams = Napi::Array::New(env, e.beams.size());
      for (size_t b = 0; b < e.beams.size(); ++b) beams.Set(uint32_t(b), ToInt32Array(env, e.beams[b]));
      o.Set("beams", beams);
    }
    forListener.Set(listed++, o);
  }
  if (listed > 0 && !session.listener.IsEmpty()) {
    Napi::Object batch = Napi::Object::New(env);
    batch.Set("stats", IterationStatsObject(env, report->stats));
    batch.Set("events", forListener);
    session.listener.Call({batch});
    // A throwing listener must not take the process down from a thread-safe callback: report it as
    // an uncaught exception would be, after this dispatch.
    if (env.IsExceptionPending()) {
      Napi::Error error = env.GetAndClearPendingException();
      napi_fatal_exception(env, error.Value());
    }
  }
}

// ---------------------------------------------------------------------------------------------------

class ShutdownWorker : public Napi::AsyncWorker {
 public:
  ShutdownWorker(Napi::Env env, std::shared_ptr<Session> session, bool cancel)
      : Napi::AsyncWorker(env, "kiln.shutdown"), deferred_(Napi::Promise::Deferred::New(env)), session_(std::move(session)), cancel_(cancel) {}
  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override {
    if (session_->executor) session_->executor->shutdown(cancel_);
  }
  void OnOK() override {
    Napi::HandleScope scope(Env());
    // Events the executor sent before it joined may still be queued: Release lets them be delivered,
    // and the channel's finalizer, which runs after the last of them, settles the promise.
    if (session_->channelFinalized) {
      deferred_.Resolve(Env().Undefined());
      return;
    }
    session_->shutdownWaiters.push_back(deferred_);
    if (session_->channelOpen) {
      session_->channelOpen = false;
      session_->channel.Release();
    }
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<Session> session_;
  bool cancel_;
};

// A rank other than 0 of a tp/pp engine: replays rank 0's schedule on a worker thread until rank 0's
// engine is disposed. A failure here (a malformed announcement) would leave the other ranks waiting in
// a collective, so it ends the whole job, naming this rank.
class FollowWorker : public Napi::AsyncWorker {
 public:
  FollowWorker(Napi::Env env, std::shared_ptr<Session> session)
      : Napi::AsyncWorker(env, "kiln.follow"), deferred_(Napi::Promise::Deferred::New(env)), session_(std::move(session)) {}
  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      session_->engine->follow();
    } catch (const std::logic_error& e) {
      SetError(e.what());
    } catch (const std::exception& e) {
      kiln::comm::abortWorld(std::string("while following rank 0: ") + e.what());
    }
  }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  void OnError(const Napi::Error& error) override { deferred_.Reject(error.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<Session> session_;
};

class EngineWrap : public Napi::ObjectWrap<EngineWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeEngine",
                       {InstanceMethod<&EngineWrap::Generate>("generate"),
                        InstanceMethod<&EngineWrap::Enqueue>("enqueue"),
                        InstanceMethod<&EngineWrap::Cancel>("cancel"),
                        InstanceMethod<&EngineWrap::SetPaused>("setPaused"),
                        InstanceMethod<&EngineWrap::SetTokenMasks>("setTokenMasks"),
                        InstanceMethod<&EngineWrap::Stats>("stats"),
                        InstanceMethod<&EngineWrap::SetEventListener>("setEventListener"),
                        InstanceMethod<&EngineWrap::Shutdown>("shutdown"),
                        InstanceMethod<&EngineWrap::Follow>("follow"),
                        InstanceMethod<&EngineWrap::Dispose>("dispose")});
  }

  // Only loadEngine constructs these, passing the session as an External.
  explicit EngineWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EngineWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() != 1 || !info[0].IsExternal()) {
      Napi::TypeError::New(env, "NativeEngine cannot be constructed directly: use loadEngine()")
          .ThrowAsJavaScriptException();
      return;
    }
    session_ = *info[0].As<Napi::External<std::shared_ptr<Session>>>().Data();
    auto* context = new std::shared_ptr<Session>(session_);
    session_->channel = EventChannel::New(
        env, "kiln.executor", 0, 1, context,
        [](Napi::Env env, void*, std::shared_ptr<Session>* ctx) {
          Session& session = **ctx;
          session.channelFinalized = true;
          if (env != nullptr) {
            Napi::HandleScope scope(env);
            for (auto& waiter : session.shutdownWaiters) waiter.Resolve(env.Undefined());
          }
          session.shutdownWaiters.clear();
          delete ctx;
        });
    session_->channelOpen = true;
    session_->channel.Unref(env);  // referenced only while requests are in flight
    info.This().As<Napi::Object>().DefineProperty(
        Napi::PropertyDescriptor::Value("info", InfoObject(env, session_->engine->info()), napi_enumerable));
    info.This().As<Napi::Object>().DefineProperty(
        Napi::PropertyDescriptor::Value("mapping", MappingObject(env, session_->engine->mapping()), napi_enumerable));
  }

  ~EngineWrap() override {
    // Collected without dispose(): stop the executor here (at most one iteration) so that its thread
    // never outlives the objects it reports to.
    if (session_ && session_->executor) session_->executor->shutdown(true);
    if (session_ && session_->channelOpen) {
      session_->channelOpen = false;
      session_->channel.Release();
    }
  }

 private:
  // The executor sink: runs on the executor's thread.
  static kiln::Executor::Sink MakeSink(std::weak_ptr<Session> weak) {
    return [weak](kiln::IterationReport&& report) {
      std::shared_ptr<Session> session = weak.lock();
      if (!session) return;
      auto* data = new kiln::IterationReport(std::move(report));
      if (session->channel.BlockingCall(data) != napi_ok) delete data;
    };
  }

  bool Usable() const { return session_ && !session_->stopped && session_->executor; }

  Napi::Value Generate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Usable()) return Rejected(env, "generate() was called after dispose() or shutdown(): this engine is disposed");
    if (info.Length() < 1 || !info[0].IsObject()) {
      return RejectedTypeError(env, "generate(request, onToken?): request must be an object");
    }
    kiln::Request request;
    Napi::Value thrown;
    std::string typeError;
    if (!ParseRequest(info[0].As<Napi::Object>(), &request, &thrown, &typeError)) {
      return thrown.IsEmpty() ? RejectedTypeError(env, typeError) : Rejected(env, thrown);
    }
    if (!request.tokenMask.empty()) {
      return RejectedTypeError(env, "generate(): request.tokenMask needs enqueue(), whose events tell when to call setTokenMasks()");
    }
    const bool hasOnToken = info.Length() >= 2 && !info[1].IsUndefined() && !info[1].IsNull();
    if (hasOnToken && !info[1].IsFunction()) return RejectedTypeError(env, "generate(request, onToken?): onToken must be a function");
    // Created once nothing can fail before it is settled: a deferred that is never resolved or rejected
    // leaks its promise's handle (ASan's leak check found these, issue 16).
    auto call = std::make_unique<GenerateCall>(env);
    if (hasOnToken) call->onToken = Napi::Persistent(info[1].As<Napi::Function>());
    call->returnContextLogits = request.returnContextLogits;
    call->returnGenerationLogits = request.returnGenerationLogits;
    kiln::RequestId id;
    try {
      id = session_->executor->enqueue(std::move(request));
    } catch (const std::exception& e) {
      Napi::Promise rejected = call->deferred.Promise();
      call->deferred.Reject(Napi::Error::New(env, e.what()).Value());
      return rejected;
    }
    Napi::Promise promise = call->deferred.Promise();
    session_->generateCalls.emplace(id, std::move(call));
    session_->started(env);
    return promise;
  }

  Napi::Value Enqueue(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Usable()) {
      Napi::Error::New(env, "enqueue() was called after dispose() or shutdown(): this engine is disposed").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (info.Length() < 1 || !info[0].IsObject()) {
      Napi::TypeError::New(env, "enqueue(request): request must be an object").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    kiln::Request request;
    Napi::Value thrown;
    std::string typeError;
    if (!ParseRequest(info[0].As<Napi::Object>(), &request, &thrown, &typeError)) {
      if (thrown.IsEmpty()) {
        Napi::TypeError::New(env, typeError).ThrowAsJavaScriptException();
      } else {
        Napi::Error(env, thrown).ThrowAsJavaScriptException();
      }
      return env.Undefined();
    }
    kiln::RequestId id;
    try {
      id = session_->executor->enqueue(std::move(request));
    } catch (const std::exception& e) {
      Napi::Error::New(env, e.what()).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    session_->started(env);
    return Num(env, double(id));
  }

  Napi::Value Cancel(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int64_t id = 0;
    if (info.Length() < 1 || info[0].IsUndefined() || !ReadInteger(info[0], 1, 9007199254740991.0, &id)) {
      Napi::TypeError::New(env, "cancel(id): id must be a request id returned by enqueue()").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (session_ && session_->executor) session_->executor->cancel(static_cast<kiln::RequestId>(id));
    return env.Undefined();
  }

  Napi::Value SetPaused(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int64_t id = 0;
    if (info.Length() < 2 || info[0].IsUndefined() || !ReadInteger(info[0], 1, 9007199254740991.0, &id) || !info[1].IsBoolean()) {
      Napi::TypeError::New(env, "setPaused(id, paused): id must be a request id returned by enqueue() and paused a boolean").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (session_ && session_->executor) session_->executor->setPaused(static_cast<kiln::RequestId>(id), info[1].As<Napi::Boolean>().Value());
    return env.Undefined();
  }

  Napi::Value SetTokenMasks(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int64_t id = 0;
    const char* usage = "setTokenMasks(id, masks): id must be a request id returned by enqueue() and masks an array of 1 to 65536 Uint32Arrays";
    if (info.Length() < 2 || info[0].IsUndefined() || !ReadInteger(info[0], 1, 9007199254740991.0, &id) || !info[1].IsArray()) {
      Napi::TypeError::New(env, usage).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Napi::Array array = info[1].As<Napi::Array>();
    if (array.Length() == 0 || array.Length() > 65536) {
      Napi::TypeError::New(env, usage).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    std::vector<std::vector<uint32_t>> masks(array.Length());
    for (uint32_t i = 0; i < array.Length(); ++i) {
      Napi::Value item = array.Get(i);
      if (env.IsExceptionPending()) return env.Undefined();
      if (!ReadTokenMask(item, &masks[i])) {
        Napi::TypeError::New(env, "setTokenMasks: masks[" + std::to_string(i) + "] must be a non-empty Uint32Array").ThrowAsJavaScriptException();
        return env.Undefined();
      }
    }
    if (session_ && session_->executor) session_->executor->setTokenMasks(static_cast<kiln::RequestId>(id), std::move(masks));
    return env.Undefined();
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!session_ || !session_->executor) {
      Napi::Error::New(env, "stats() was called after dispose(): this engine is disposed").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    const kiln::ExecutorStats s = session_->executor->stats();
    Napi::Object o = Napi::Object::New(env);
    o.Set("iterations", Num(env, double(s.iterations)));
    o.Set("waitingRequests", Num(env, double(s.waitingRequests)));
    o.Set("activeRequests", Num(env, double(s.activeRequests)));
    o.Set("kvBlocksTotal", Num(env, double(s.kvBlocksTotal)));
    o.Set("kvBlocksUsed", Num(env, double(s.kvBlocksUsed)));
    o.Set("kvBlocksFree", Num(env, double(s.kvBlocksFree)));
    o.Set("kvBlocksCached", Num(env, double(s.kvBlocksCached)));
    o.Set("tokensPerBlock", Num(env, double(s.tokensPerBlock)));
    o.Set("maxBatchSize", Num(env, double(s.maxBatchSize)));
    o.Set("maxNumTokens", Num(env, double(s.maxNumTokens)));
    Napi::Array recent = Napi::Array::New(env, s.recentIterations.size());
    for (size_t i = 0; i < s.recentIterations.size(); ++i) recent.Set(uint32_t(i), IterationStatsObject(env, s.recentIterations[i]));
    o.Set("recentIterations", recent);
    return o;
  }

  Napi::Value SetEventListener(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || info[0].IsUndefined() || info[0].IsNull()) {
      if (session_) session_->listener.Reset();
      return env.Undefined();
    }
    if (!info[0].IsFunction()) {
      Napi::TypeError::New(env, "setEventListener(listener): listener must be a function or undefined").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (session_) session_->listener = Napi::Persistent(info[0].As<Napi::Function>());
    return env.Undefined();
  }

  Napi::Value StartShutdown(Napi::Env env, bool cancel) {
    if (!session_) {
      Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
      d.Resolve(env.Undefined());
      return d.Promise();
    }
    session_->stopped = true;
    auto* worker = new ShutdownWorker(env, session_, cancel);
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
  }

  Napi::Value Shutdown(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bool cancel = false;
    if (info.Length() >= 1 && info[0].IsObject()) {
      Napi::Value thrown;
      Napi::Value v = GetProperty(info[0].As<Napi::Object>(), "cancel", &thrown);
      if (!thrown.IsEmpty()) return Rejected(env, thrown);
      if (!ReadBool(v, &cancel)) return RejectedTypeError(env, "shutdown(options?): options.cancel must be a boolean");
    }
    return StartShutdown(env, cancel);  // a second call joins again and resolves once stopped
  }

  Napi::Value Follow(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!session_) return RejectedTypeError(env, "follow(): the engine has been disposed");
    auto* worker = new FollowWorker(env, session_);
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!session_) return env.Undefined();
    // Running generates finish first; the session (engine, executor) is freed when the shutdown
    // worker and the thread-safe function let go of it.
    if (!session_->stopped) StartShutdown(env, false);
    session_.reset();
    return env.Undefined();
  }

  std::shared_ptr<Session> session_;

 public:
  static kiln::Executor::Sink SinkFor(const std::shared_ptr<Session>& session) { return MakeSink(session); }
};

// ---------------------------------------------------------------------------------------------------

class LoadWorker : public Napi::AsyncWorker {
 public:
  LoadWorker(Napi::Env env, std::string path, kiln::EngineOptions options, kiln::ExecutorConfig config,
             Napi::FunctionReference* constructor)
      : Napi::AsyncWorker(env, "kiln.loadEngine"),
        deferred_(Napi::Promise::Deferred::New(env)),
        path_(std::move(path)),
        options_(options),
        config_(config),
        constructor_(constructor) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      session_ = std::make_shared<Session>();
      session_->engine = std::make_shared<kiln::Engine>(path_, options_);
      session_->executor = std::make_unique<kiln::Executor>(session_->engine, config_, EngineWrap::SinkFor(session_));
    } catch (const std::exception& e) {
      session_.reset();
      SetError(e.what());
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Napi::Object obj = constructor_->New({Napi::External<std::shared_ptr<Session>>::New(env, &session_)});
    if (env.IsExceptionPending()) {
      deferred_.Reject(env.GetAndClearPendingException().Value());
      return;
    }
    deferred_.Resolve(obj);
  }

  void OnError(const Napi::Error& error) override {
    Napi::HandleScope scope(Env());
    deferred_.Reject(error.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::string path_;
  kiln::EngineOptions options_;
  kiln::ExecutorConfig config_;
  Napi::FunctionReference* constructor_;
  std::shared_ptr<Session> session_;
};

// Where mpirun put this process (rank 0 of 1 when it did not launch it); reads the environment only.
Napi::Value WorldInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const kiln::comm::WorldInfo w = kiln::comm::worldInfo();
  Napi::Object o = Napi::Object::New(env);
  o.Set("rank", Napi::Number::New(env, w.rank));
  o.Set("size", Napi::Number::New(env, w.size));
  o.Set("launchedByMpirun", Napi::Boolean::New(env, w.launchedByMpirun));
  o.Set("mpiCompiled", Napi::Boolean::New(env, w.mpiCompiled));
  return o;
}

Napi::Value LoadEngine(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    return RejectedTypeError(env, "loadEngine(path, options?): path must be a string");
  }
  std::string path = info[0].As<Napi::String>().Utf8Value();
  kiln::EngineOptions options;
  kiln::ExecutorConfig config;
  if (info.Length() >= 2 && !info[1].IsUndefined() && !info[1].IsNull()) {
    if (!info[1].IsObject()) return RejectedTypeError(env, "loadEngine(path, options?): options must be an object");
    Napi::Object o = info[1].As<Napi::Object>();
    Napi::Value thrown;
    auto integer = [&](const char* key, double lo, double hi, int64_t* out, const char* message) -> bool {
      Napi::Value v = GetProperty(o, key, &thrown);
      if (!thrown.IsEmpty()) return false;
      if (!ReadInteger(v, lo, hi, out)) {
        thrown = Napi::TypeError::New(env, message).Value();
        return false;
      }
      return true;
    };
    int64_t numThreads = 0;
    if (!integer("numThreads", 1, 1024, &numThreads, "options.numThreads must be an integer in [1, 1024]") ||
        !integer("kvCacheTokens", 1, 1099511627776.0, &options.kvCacheTokens, "options.kvCacheTokens must be an integer >= 1") ||
        !integer("kvCacheBytes", 1, 4503599627370496.0, &options.kvCacheBytes, "options.kvCacheBytes must be an integer >= 1") ||
        !integer("maxBatchSize", 1, 1 << 16, &config.maxBatchSize, "options.maxBatchSize must be an integer >= 1") ||
        !integer("maxNumTokens", 1, 1 << 20, &config.maxNumTokens, "options.maxNumTokens must be an integer >= 1")) {
      return Rejected(env, thrown);
    }
    options.numThreads = static_cast<int>(numThreads);
    Napi::Value v = GetProperty(o, "kvCacheMemoryFraction", &thrown);
    if (!thrown.IsEmpty()) return Rejected(env, thrown);
    if (!v.IsUndefined()) {
      const double f = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
      if (!(f > 0 && f <= 1)) return RejectedTypeError(env, "options.kvCacheMemoryFraction must be a number in (0, 1]");
      options.kvCacheMemoryFraction = f;
    }
    v = GetProperty(o, "forceGeneric", &thrown);
    if (!thrown.IsEmpty()) return Rejected(env, thrown);
    if (!ReadBool(v, &options.forceGeneric)) return RejectedTypeError(env, "options.forceGeneric must be a boolean");
    v = GetProperty(o, "enableBlockReuse", &thrown);
    if (!thrown.IsEmpty()) return Rejected(env, thrown);
    if (!ReadBool(v, &config.enableBlockReuse)) return RejectedTypeError(env, "options.enableBlockReuse must be a boolean");
    v = GetProperty(o, "capacitySchedulerPolicy", &thrown);
    if (!thrown.IsEmpty()) return Rejected(env, thrown);
    if (!v.IsUndefined()) {
      const std::string policy = v.IsString() ? v.As<Napi::String>().Utf8Value() : std::string();
      if (policy == "guaranteedNoEvict") {
        config.capacitySchedulerPolicy = kiln::CapacitySchedulerPolicy::GuaranteedNoEvict;
      } else if (policy == "maxUtilization") {
        config.capacitySchedulerPolicy = kiln::CapacitySchedulerPolicy::MaxUtilization;
      } else {
        return RejectedTypeError(env, "options.capacitySchedulerPolicy must be \"guaranteedNoEvict\" or \"maxUtilization\"");
      }
    }
  }
  auto* constructor = static_cast<Napi::FunctionReference*>(info.Data());
  auto* worker = new LoadWorker(env, std::move(path), options, config, constructor);
  Napi::Promise promise = worker->Promise();
  worker->Queue();
  return promise;
}

}  // namespace

void InitEngine(Napi::Env env, Napi::Object exports) {
  // The class constructor lives as long as this environment (a cleanup hook frees it), without using
  // the addon's single instance-data slot, which other parts of the addon may want.
  auto* constructor = new Napi::FunctionReference(Napi::Persistent(EngineWrap::Define(env)));
  env.AddCleanupHook([constructor]() { delete constructor; });
  exports.Set("loadEngine", Napi::Function::New(env, LoadEngine, "loadEngine", constructor));
  exports.Set("worldInfo", Napi::Function::New(env, WorldInfo, "worldInfo"));
}
