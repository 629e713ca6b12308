// loadEngine() and the NativeEngine object (native/lib/types.ts). Loading and generation run on libuv
// worker threads; tokens reach JavaScript through the progress queue of the generate worker, which node-
// addon-api drains before it calls OnOK, so onToken sees every token, in order, before the promise settles.
//
// Lifetime: the JS object and every in-flight worker each hold a shared_ptr to the Engine. dispose() drops
// the object's reference, so the engine is freed at once when idle, or when the last running generate
// finishes: never while a worker thread still uses it.
#include <napi.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <utility>

#include "kiln/runtime/engine.h"

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
  o.Set("maxBatchSize", Napi::Number::New(env, static_cast<double>(i.maxBatchSize)));
  o.Set("maxSeqLen", Napi::Number::New(env, static_cast<double>(i.maxSeqLen)));
  o.Set("maxNumTokens", Napi::Number::New(env, static_cast<double>(i.maxNumTokens)));
  o.Set("maxLogitRows", Napi::Number::New(env, static_cast<double>(i.maxLogitRows)));
  o.Set("vocabSize", Napi::Number::New(env, static_cast<double>(i.vocabSize)));
  o.Set("modelJson", Napi::String::New(env, i.modelJson));
  o.Freeze();
  return o;
}

Napi::Float32Array ToFloat32Array(Napi::Env env, const std::vector<float>& v) {
  Napi::Float32Array a = Napi::Float32Array::New(env, v.size());
  if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * sizeof(float));
  return a;
}

// ---------------------------------------------------------------------------------------------------

class GenerateWorker : public Napi::AsyncProgressQueueWorker<int32_t> {
 public:
  GenerateWorker(Napi::Env env, EnginePtr engine, kiln::GenerateRequest request, Napi::Function onToken)
      : Napi::AsyncProgressQueueWorker<int32_t>(env, "kiln.generate"),
        deferred_(Napi::Promise::Deferred::New(env)),
        engine_(std::move(engine)),
        request_(std::move(request)) {
    if (!onToken.IsEmpty()) onToken_ = Napi::Persistent(onToken);
  }

  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  void Execute(const ExecutionProgress& progress) override {
    const bool wantTokens = !onToken_.IsEmpty();
    try {
      result_ = engine_->generate(request_, [&](int32_t token) {
        // A throwing onToken ends the generation early; the promise then rejects with its error.
        if (callbackFailed_.load()) throw std::runtime_error("onToken threw");
        if (wantTokens) progress.Send(&token, 1);
      });
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }

  void OnProgress(const int32_t* data, size_t count) override {
    if (onToken_.IsEmpty() || callbackFailed_.load()) return;
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    for (size_t i = 0; i < count; ++i) {
      onToken_.Call({Napi::Number::New(env, data[i])});
      if (env.IsExceptionPending()) {
        Napi::Value thrown = env.GetAndClearPendingException().Value();
        // Node-API version 8 can only reference objects; a thrown primitive becomes an Error.
        if (!thrown.IsObject()) thrown = Napi::Error::New(env, "onToken threw a non-Error value").Value();
        callbackError_ = Napi::Reference<Napi::Value>::New(thrown, 1);
        callbackFailed_.store(true);
        return;
      }
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (callbackFailed_.load()) {
      deferred_.Reject(callbackError_.Value());
      return;
    }
    Napi::Object out = Napi::Object::New(env);
    Napi::Int32Array ids = Napi::Int32Array::New(env, result_.outputIds.size());
    if (!result_.outputIds.empty()) {
      std::memcpy(ids.Data(), result_.outputIds.data(), result_.outputIds.size() * sizeof(int32_t));
    }
    out.Set("outputIds", ids);
    out.Set("finishReason", Napi::String::New(env, result_.finishReason));
    if (request_.returnContextLogits) out.Set("contextLogits", ToFloat32Array(env, result_.contextLogits));
    if (request_.returnGenerationLogits) out.Set("generationLogits", ToFloat32Array(env, result_.generationLogits));
    deferred_.Resolve(out);
  }

  void OnError(const Napi::Error& error) override {
    Napi::HandleScope scope(Env());
    deferred_.Reject(callbackFailed_.load() ? callbackError_.Value() : error.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  EnginePtr engine_;
  kiln::GenerateRequest request_;
  kiln::GenerateResult result_;
  Napi::FunctionReference onToken_;
  Napi::Reference<Napi::Value> callbackError_;
  std::atomic<bool> callbackFailed_{false};
};

// ---------------------------------------------------------------------------------------------------

class EngineWrap : public Napi::ObjectWrap<EngineWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeEngine",
                       {InstanceMethod<&EngineWrap::Generate>("generate"),
                        InstanceMethod<&EngineWrap::Dispose>("dispose")});
  }

  // Only loadEngine constructs these, passing the engine as an External.
  explicit EngineWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EngineWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() != 1 || !info[0].IsExternal()) {
      Napi::TypeError::New(env, "NativeEngine cannot be constructed directly: use loadEngine()")
          .ThrowAsJavaScriptException();
      return;
    }
    engine_ = *info[0].As<Napi::External<EnginePtr>>().Data();
    info.This().As<Napi::Object>().DefineProperty(
        Napi::PropertyDescriptor::Value("info", InfoObject(env, engine_->info()), napi_enumerable));
  }

 private:
  Napi::Value Generate(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!engine_) return Rejected(env, "generate() was called after dispose(): this engine is disposed");
    if (info.Length() < 1 || !info[0].IsObject()) {
      return RejectedTypeError(env, "generate(request, onToken?): request must be an object");
    }
    Napi::Object req = info[0].As<Napi::Object>();
    Napi::Value thrown;
    kiln::GenerateRequest request;

    Napi::Value ids = GetProperty(req, "inputIds", &thrown);
    if (!thrown.IsEmpty()) return Rejected(env, thrown);
    if (!ids.IsTypedArray() || ids.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
      return RejectedTypeError(env, "request.inputIds must be an Int32Array");
    }
    Napi::Int32Array idArray = ids.As<Napi::Int32Array>();
    request.inputIds.assign(idArray.Data(), idArray.Data() + idArray.ElementLength());

    Napi::Value maxTokens = GetProperty(req, "maxTokens", &thrown);
    if (!thrown.IsEmpty()) return Rejected(env, thrown);
    request.maxTokens = 0;
    if (maxTokens.IsUndefined() || !ReadInteger(maxTokens, 1, 2147483647.0, &request.maxTokens)) {
      return RejectedTypeError(env, "request.maxTokens must be an integer >= 1");
    }
    Napi::Value endId = GetProperty(req, "endId", &thrown);
    if (!thrown.IsEmpty()) return Rejected(env, thrown);
    if (!ReadInteger(endId, -1, 2147483647.0, &request.endId)) {
      return RejectedTypeError(env, "request.endId must be an integer >= -1 (-1 for none)");
    }
    Napi::Value ctx = GetProperty(req, "returnContextLogits", &thrown);
    if (!thrown.IsEmpty()) return Rejected(env, thrown);
    if (!ReadBool(ctx, &request.returnContextLogits)) {
      return RejectedTypeError(env, "request.returnContextLogits must be a boolean");
    }
    Napi::Value gen = GetProperty(req, "returnGenerationLogits", &thrown);
    if (!thrown.IsEmpty()) return Rejected(env, thrown);
    if (!ReadBool(gen, &request.returnGenerationLogits)) {
      return RejectedTypeError(env, "request.returnGenerationLogits must be a boolean");
    }

    Napi::Function onToken;
    if (info.Length() >= 2 && !info[1].IsUndefined() && !info[1].IsNull()) {
      if (!info[1].IsFunction()) return RejectedTypeError(env, "generate(request, onToken?): onToken must be a function");
      onToken = info[1].As<Napi::Function>();
    }

    auto* worker = new GenerateWorker(env, engine_, std::move(request), onToken);
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    engine_.reset();  // running generates keep their own reference until they finish
    return info.Env().Undefined();
  }

  EnginePtr engine_;
};

// ---------------------------------------------------------------------------------------------------

class LoadWorker : public Napi::AsyncWorker {
 public:
  LoadWorker(Napi::Env env, std::string path, kiln::EngineOptions options, Napi::FunctionReference* constructor)
      : Napi::AsyncWorker(env, "kiln.loadEngine"),
        deferred_(Napi::Promise::Deferred::New(env)),
        path_(std::move(path)),
        options_(options),
        constructor_(constructor) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      engine_ = std::make_shared<kiln::Engine>(path_, options_);
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Napi::Object obj = constructor_->New({Napi::External<EnginePtr>::New(env, &engine_)});
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
  Napi::FunctionReference* constructor_;
  EnginePtr engine_;
};

Napi::Value LoadEngine(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) {
    return RejectedTypeError(env, "loadEngine(path, options?): path must be a string");
  }
  std::string path = info[0].As<Napi::String>().Utf8Value();
  kiln::EngineOptions options;
  if (info.Length() >= 2 && !info[1].IsUndefined() && !info[1].IsNull()) {
    if (!info[1].IsObject()) return RejectedTypeError(env, "loadEngine(path, options?): options must be an object");
    Napi::Object o = info[1].As<Napi::Object>();
    Napi::Value thrown;
    int64_t numThreads = 0;
    Napi::Value v = GetProperty(o, "numThreads", &thrown);
    if (!thrown.IsEmpty()) return Rejected(env, thrown);
    if (!ReadInteger(v, 1, 1024, &numThreads)) {
      return RejectedTypeError(env, "options.numThreads must be an integer in [1, 1024]");
    }
    options.numThreads = static_cast<int>(numThreads);
    v = GetProperty(o, "kvCacheTokens", &thrown);
    if (!thrown.IsEmpty()) return Rejected(env, thrown);
    if (!ReadInteger(v, 1, 1099511627776.0, &options.kvCacheTokens)) {
      return RejectedTypeError(env, "options.kvCacheTokens must be an integer >= 1");
    }
    v = GetProperty(o, "forceGeneric", &thrown);
    if (!thrown.IsEmpty()) return Rejected(env, thrown);
    if (!ReadBool(v, &options.forceGeneric)) {
      return RejectedTypeError(env, "options.forceGeneric must be a boolean");
    }
  }
  auto* constructor = static_cast<Napi::FunctionReference*>(info.Data());
  auto* worker = new LoadWorker(env, std::move(path), options, constructor);
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
}
