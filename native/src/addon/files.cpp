// Bindings for Kiln's file formats: safetensors (read, write) and the `.engine` container (write, and a
// structural inspection for tests). The JavaScript arguments are copied into plain C++ structs on the JS
// thread; all file work runs in Napi::AsyncWorker::Execute on a libuv worker thread.
#include <napi.h>

#include <cmath>
#include <exception>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "kiln/dtype.h"
#include "kiln/runtime/backend.h"
#include "kiln/format/engine_file.h"
#include "kiln/format/gguf.h"
#include "kiln/format/gguf_import.h"
#include "kiln/format/gguf_writer.h"
#include "kiln/format/safetensors.h"
#include "kiln/format/safetensors_writer.h"
#include "kiln/backends/cpu/kernels/kernels.h"

namespace {

constexpr double kMaxSafeInteger = 9007199254740991.0;  // Number.MAX_SAFE_INTEGER

// Reads JavaScript values into C++ ones. On a bad argument it records a message naming the field; if
// a property getter threw, the JavaScript exception is left pending and `jsThrew` is set.
class ArgReader {
 public:
  explicit ArgReader(Napi::Env env) : env_(env) {}

  bool failed() const { return !error_.empty() || jsThrew_; }
  const std::string& error() const { return error_; }
  bool jsThrew() const { return jsThrew_; }

  bool fail(const std::string& message) {
    if (error_.empty()) error_ = message;
    return false;
  }

  // obj[key], or false when a getter threw.
  bool get(const Napi::Object& obj, const char* key, Napi::Value* out) {
    Napi::Value v = obj.Get(key);
    if (env_.IsExceptionPending()) {
      jsThrew_ = true;
      return false;
    }
    *out = v;
    return true;
  }

  bool object(const Napi::Value& v, const std::string& what, Napi::Object* out) {
    if (!v.IsObject() || v.IsArray()) return fail(what + " must be an object");
    *out = v.As<Napi::Object>();
    return true;
  }

  bool string(const Napi::Value& v, const std::string& what, std::string* out) {
    if (!v.IsString()) return fail(what + " must be a string");
    *out = v.As<Napi::String>().Utf8Value();
    return true;
  }

  bool nonEmptyString(const Napi::Value& v, const std::string& what, std::string* out) {
    if (!string(v, what, out)) return false;
    if (out->empty()) return fail(what + " must not be empty");
    return true;
  }

  bool integer(const Napi::Value& v, const std::string& what, int64_t* out) {
    if (!v.IsNumber()) return fail(what + " must be a non-negative integer");
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d) || d < 0 || d > kMaxSafeInteger || d != std::floor(d)) {
      return fail(what + " must be a non-negative integer");
    }
    *out = static_cast<int64_t>(d);
    return true;
  }

  // obj[key] when it is a boolean; `out` keeps its default when the key is absent.
  bool optionalBoolean(const Napi::Object& obj, const char* key, const std::string& what, bool* out) {
    Napi::Value v;
    if (!get(obj, key, &v)) return false;
    if (v.IsUndefined()) return true;
    if (!v.IsBoolean()) return fail(what + " must be a boolean");
    *out = v.As<Napi::Boolean>().Value();
    return true;
  }

  // A plain object of string values, read key by key (own enumerable keys).
  bool stringMap(const Napi::Value& v, const std::string& what, std::map<std::string, std::string>* out) {
    Napi::Object obj;
    if (!object(v, what, &obj)) return false;
    Napi::Array keys = obj.GetPropertyNames();
    for (uint32_t i = 0; i < keys.Length(); ++i) {
      Napi::Value key, value;
      std::string k, text;
      if (!element(keys, i, &key) || !string(key, what + " key", &k)) return false;
      if (!get(obj, k.c_str(), &value) || !string(value, what + "[\"" + k + "\"]", &text)) return false;
      (*out)[k] = text;
    }
    return true;
  }

  bool array(const Napi::Value& v, const std::string& what, Napi::Array* out) {
    if (!v.IsArray()) return fail(what + " must be an array");
    *out = v.As<Napi::Array>();
    return true;
  }

  bool element(const Napi::Array& a, uint32_t i, Napi::Value* out) {
    Napi::Value v = a.Get(i);
    if (env_.IsExceptionPending()) {
      jsThrew_ = true;
      return false;
    }
    *out = v;
    return true;
  }

  bool shape(const Napi::Value& v, const std::string& what, std::vector<int64_t>* out) {
    Napi::Array a;
    if (!array(v, what, &a)) return false;
    for (uint32_t i = 0; i < a.Length(); ++i) {
      Napi::Value d;
      int64_t n;
      if (!element(a, i, &d) || !integer(d, what + "[" + std::to_string(i) + "]", &n)) return false;
      out->push_back(n);
    }
    return true;
  }

  // int8, int4, float8_e4m3fn and q8_0 (quantized weights) only where `allowQuantized`: engine weights, not safetensors files.
  bool dtype(const Napi::Value& v, const std::string& what, kiln::DType* out, bool allowQuantized = false) {
    std::string name;
    if (!string(v, what, &name)) return false;
    if (!kiln::parseDTypeName(name, out) || *out == kiln::DType::I32 || (kiln::isQuantizedType(*out) && !allowQuantized)) {
      return fail(what + " must be \"float32\", \"float16\"" +
                  (allowQuantized ? ", \"bfloat16\", \"int8\", \"int4\", \"float8_e4m3fn\" or \"q8_0\"" : " or \"bfloat16\"") + ", got \"" + name + "\"");
    }
    return true;
  }

  bool sources(const Napi::Value& v, const std::string& what, std::vector<kiln::TensorSourceSpec>* out) {
    Napi::Array a;
    if (!array(v, what, &a)) return false;
    for (uint32_t i = 0; i < a.Length(); ++i) {
      const std::string w = what + "[" + std::to_string(i) + "]";
      Napi::Value item, field;
      Napi::Object obj;
      kiln::TensorSourceSpec src;
      if (!element(a, i, &item) || !object(item, w, &obj)) return false;
      if (!get(obj, "file", &field) || !nonEmptyString(field, w + ".file", &src.file)) return false;
      if (!get(obj, "tensor", &field) || !string(field, w + ".tensor", &src.tensor)) return false;
      if (!optionalBoolean(obj, "transpose", w + ".transpose", &src.transpose)) return false;
      if (!get(obj, "rowStart", &field)) return false;
      if (!field.IsUndefined() && !integer(field, w + ".rowStart", &src.rowStart)) return false;
      if (!get(obj, "rowCount", &field)) return false;
      if (!field.IsUndefined() && !integer(field, w + ".rowCount", &src.rowCount)) return false;
      out->push_back(std::move(src));
    }
    return true;
  }

 private:
  Napi::Env env_;
  std::string error_;
  bool jsThrew_ = false;
};

// Runs `work` on a libuv worker thread and returns a promise: resolved with what `toJs` makes of the
// result on the JS thread, or rejected with the message of what `work` threw. Each binding below is
// then its argument reading and these two functions.
template <typename Work, typename ToJs>
Napi::Promise queueTask(Napi::Env env, const char* name, Work work, ToJs toJs) {
  using Result = decltype(work());
  class Task : public Napi::AsyncWorker {
   public:
    Task(Napi::Env env, const char* name, Work work, ToJs toJs)
        : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)), toJs_(std::move(toJs)) {}
    Napi::Promise promise() const { return deferred_.Promise(); }

   protected:
    void Execute() override {
      try {
        result_ = work_();
      } catch (const std::exception& e) {
        SetError(e.what());
      }
    }
    void OnOK() override { deferred_.Resolve(toJs_(Env(), result_)); }
    void OnError(const Napi::Error& error) override { deferred_.Reject(error.Value()); }

   private:
    Napi::Promise::Deferred deferred_;
    Work work_;
    ToJs toJs_;
    Result result_{};
  };
  auto* task = new Task(env, name, std::move(work), std::move(toJs));
  Napi::Promise promise = task->promise();
  task->Queue();
  return promise;
}

// For work that returns nothing of interest: the promise resolves with undefined.
struct Done {};
inline Napi::Value undefinedResult(Napi::Env env, Done&) { return env.Undefined(); }

// A promise rejected at once because the arguments were wrong: a TypeError naming the field, or the
// exception a property getter threw.
Napi::Value rejectArgs(Napi::Env env, const ArgReader& args, const char* fn) {
  auto deferred = Napi::Promise::Deferred::New(env);
  if (args.jsThrew()) {
    deferred.Reject(env.GetAndClearPendingException().Value());
  } else {
    deferred.Reject(Napi::TypeError::New(env, std::string(fn) + ": " + args.error()).Value());
  }
  return deferred.Promise();
}

Napi::Array shapeArray(Napi::Env env, const std::vector<int64_t>& shape) {
  Napi::Array a = Napi::Array::New(env, shape.size());
  for (size_t i = 0; i < shape.size(); ++i) a.Set(static_cast<uint32_t>(i), static_cast<double>(shape[i]));
  return a;
}

// ---- cpuInfo -------------------------------------------------------------------------------------

Napi::Value CpuInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  // isa: what an engine built here records as its minimum (engines need AVX2 or nothing); kernels: the
  // best kernel set this CPU runs them with (KILN_CPU_ISA caps it at load).
  out.Set("isa", kiln::detectIsa() >= kiln::Isa::Avx2 ? "avx2" : "generic");
  out.Set("kernels", kiln::isaName(kiln::detectIsa()));
  const unsigned n = std::thread::hardware_concurrency();
  out.Set("hardwareConcurrency", static_cast<double>(n == 0 ? 1 : n));  // 0 means "unknown"
  return out;
}

// ---- cudaInfo ------------------------------------------------------------------------------------

// Synchronous: asks the CUDA runtime for its devices (milliseconds once the driver is loaded).
Napi::Value CudaInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const kiln::CudaInfo cuda = kiln::queryCuda();
  Napi::Object out = Napi::Object::New(env);
  out.Set("compiled", cuda.compiled);
  Napi::Array devices = Napi::Array::New(env, cuda.devices.size());
  for (size_t i = 0; i < cuda.devices.size(); ++i) {
    const kiln::CudaDeviceInfo& d = cuda.devices[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("index", d.index);
    o.Set("name", d.name);
    o.Set("computeCapability", d.computeCapability);
    o.Set("totalBytes", static_cast<double>(d.totalBytes));
    o.Set("freeBytes", static_cast<double>(d.freeBytes));
    devices.Set(static_cast<uint32_t>(i), o);
  }
  out.Set("devices", devices);
  if (!cuda.error.empty()) out.Set("error", cuda.error);
  return out;
}

// ---- readSafetensors -----------------------------------------------------------------------------

struct SafetensorsListing {
  std::string path;
  size_t fileSize = 0;
  std::map<std::string, std::string> metadata;
  std::vector<kiln::SafetensorsTensor> tensors;
};

Napi::Value ReadSafetensors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ArgReader args(env);
  std::string path;
  if (!args.nonEmptyString(info[0], "path", &path)) return rejectArgs(env, args, "readSafetensors");
  auto work = [path]() {
    kiln::SafetensorsFile file(path);
    SafetensorsListing listing{path, file.fileSize(), file.metadata(), file.tensors()};
    for (auto& t : listing.tensors) t.data = nullptr;  // the map is gone once `file` is
    return listing;
  };
  auto toJs = [](Napi::Env env, SafetensorsListing& listing) -> Napi::Value {
    Napi::Object out = Napi::Object::New(env);
    out.Set("path", listing.path);
    out.Set("fileSize", static_cast<double>(listing.fileSize));
    Napi::Object metadata = Napi::Object::New(env);
    for (const auto& kv : listing.metadata) metadata.Set(kv.first, kv.second);
    out.Set("metadata", metadata);
    Napi::Array tensors = Napi::Array::New(env, listing.tensors.size());
    for (size_t i = 0; i < listing.tensors.size(); ++i) {
      const auto& t = listing.tensors[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", t.name);
      o.Set("dtype", t.dtype);
      o.Set("shape", shapeArray(env, t.shape));
      o.Set("byteOffset", static_cast<double>(t.byteOffset));
      o.Set("byteLength", static_cast<double>(t.byteLength));
      tensors.Set(static_cast<uint32_t>(i), o);
    }
    out.Set("tensors", tensors);
    return out;
  };
  return queueTask(env, "kiln.readSafetensors", std::move(work), toJs);
}

// ---- writeSafetensors ----------------------------------------------------------------------------

Napi::Value WriteSafetensors(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ArgReader args(env);
  Napi::Object options;
  Napi::Value field;
  std::string path;
  std::map<std::string, std::string> metadata;
  std::vector<kiln::TensorWriteSpec> tensors;
  bool rejectNonFinite = false;
  auto read = [&]() -> bool {
    if (!args.object(info[0], "options", &options)) return false;
    if (!args.get(options, "path", &field) || !args.nonEmptyString(field, "options.path", &path)) return false;
    if (!args.optionalBoolean(options, "rejectNonFinite", "options.rejectNonFinite", &rejectNonFinite)) return false;
    if (!args.get(options, "metadata", &field)) return false;
    if (!field.IsUndefined() && !args.stringMap(field, "options.metadata", &metadata)) return false;
    Napi::Array list;
    if (!args.get(options, "tensors", &field) || !args.array(field, "options.tensors", &list)) return false;
    for (uint32_t i = 0; i < list.Length(); ++i) {
      const std::string w = "options.tensors[" + std::to_string(i) + "]";
      Napi::Value item;
      Napi::Object obj;
      kiln::TensorWriteSpec spec;
      if (!args.element(list, i, &item) || !args.object(item, w, &obj)) return false;
      if (!args.get(obj, "name", &field) || !args.nonEmptyString(field, w + ".name", &spec.name)) return false;
      if (!args.get(obj, "dtype", &field) || !args.dtype(field, w + ".dtype", &spec.dtype)) return false;
      if (!args.get(obj, "shape", &field) || !args.shape(field, w + ".shape", &spec.shape)) return false;
      if (!args.get(obj, "sources", &field) || !args.sources(field, w + ".sources", &spec.sources)) return false;
      tensors.push_back(std::move(spec));
    }
    return true;
  };
  if (!read()) return rejectArgs(env, args, "writeSafetensors");
  auto work = [path, metadata = std::move(metadata), tensors = std::move(tensors), rejectNonFinite]() {
    kiln::writeSafetensors(path, metadata, tensors, rejectNonFinite);
    return Done{};
  };
  return queueTask(env, "kiln.writeSafetensors", std::move(work), undefinedResult);
}

// ---- writeEngine ---------------------------------------------------------------------------------

Napi::Value WriteEngine(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ArgReader args(env);
  Napi::Object options;
  Napi::Value field;
  std::string path, header;
  std::vector<kiln::EngineWeightSpec> weights;
  auto read = [&]() -> bool {
    if (!args.object(info[0], "options", &options)) return false;
    if (!args.get(options, "path", &field) || !args.nonEmptyString(field, "options.path", &path)) return false;
    if (!args.get(options, "header", &field) || !args.nonEmptyString(field, "options.header", &header)) return false;
    Napi::Array list;
    if (!args.get(options, "weights", &field) || !args.array(field, "options.weights", &list)) return false;
    for (uint32_t i = 0; i < list.Length(); ++i) {
      const std::string w = "options.weights[" + std::to_string(i) + "]";
      Napi::Value item, data, sources;
      Napi::Object obj;
      kiln::EngineWeightSpec spec;
      if (!args.element(list, i, &item) || !args.object(item, w, &obj)) return false;
      if (!args.get(obj, "name", &field) || !args.nonEmptyString(field, w + ".name", &spec.name)) return false;
      if (!args.get(obj, "dtype", &field) || !args.dtype(field, w + ".dtype", &spec.dtype, /*allowQuantized=*/true)) return false;
      if (!args.get(obj, "shape", &field) || !args.shape(field, w + ".shape", &spec.shape)) return false;
      // int4: the group size (checked against the header's entry, and the shape, by writeEngineFile).
      if (!args.get(obj, "groupSize", &field)) return false;
      if (!field.IsUndefined()) {
        if (spec.dtype != kiln::DType::I4) return args.fail(w + ".groupSize is for int4 weights only");
        if (!args.integer(field, w + ".groupSize", &spec.groupSize)) return false;
      } else if (spec.dtype == kiln::DType::I4) {
        return args.fail(w + ".groupSize is required for int4 weights");
      }
      if (!args.get(obj, "data", &data) || !args.get(obj, "sources", &sources)) return false;
      if (!data.IsUndefined() == !sources.IsUndefined()) {
        return args.fail(w + " must have exactly one of `sources` and `data`");
      }
      if (!data.IsUndefined()) {
        if (!data.IsTypedArray() || data.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
          return args.fail(w + ".data must be a Float32Array");
        }
        if (spec.dtype != kiln::DType::F32) return args.fail(w + ".dtype must be \"float32\" for constant data");
        // Copied: the caller may reuse the array while the write runs on another thread.
        Napi::Float32Array values = data.As<Napi::Float32Array>();
        spec.constant = true;
        spec.data.assign(values.Data(), values.Data() + values.ElementLength());
      } else if (!args.sources(sources, w + ".sources", &spec.sources)) {
        return false;
      }
      weights.push_back(std::move(spec));
    }
    return true;
  };
  if (!read()) return rejectArgs(env, args, "writeEngine");
  auto work = [path, header = std::move(header), weights = std::move(weights)]() { return kiln::writeEngineFile(path, header, weights); };
  auto toJs = [](Napi::Env env, kiln::WriteEngineResult& result) -> Napi::Value {
    Napi::Object out = Napi::Object::New(env);
    out.Set("checksum", kiln::hex64(result.checksum));
    out.Set("fileSize", static_cast<double>(result.fileSize));
    Napi::Array report = Napi::Array::New(env, result.quantization.size());
    for (size_t i = 0; i < result.quantization.size(); ++i) {
      const kiln::QuantizationError& q = result.quantization[i];
      Napi::Object e = Napi::Object::New(env);
      e.Set("name", q.name);
      e.Set("maxRelativeError", q.maxRelativeError);
      e.Set("rmsRelativeError", q.rmsRelativeError);
      if (q.blocks > 0) {
        e.Set("losslessBlocks", static_cast<double>(q.losslessBlocks));
        e.Set("blocks", static_cast<double>(q.blocks));
      }
      report.Set(static_cast<uint32_t>(i), e);
    }
    out.Set("quantization", report);
    return out;
  };
  return queueTask(env, "kiln.writeEngine", std::move(work), toJs);
}

// ---- inspectEngine (tests) -----------------------------------------------------------------------

// Opens an engine with every structural check the loader does, and reports what it found, so tests can
// exercise the container without the runtime.
struct EngineListing {
  std::string checksum;
  std::string headerJson;
  std::vector<kiln::EngineWeight> weights;
};

Napi::Value InspectEngine(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ArgReader args(env);
  std::string path;
  if (!args.nonEmptyString(info[0], "path", &path)) return rejectArgs(env, args, "inspectEngine");
  auto work = [path]() {
    kiln::EngineFile file(path);
    EngineListing listing{file.checksumHex(), file.headerText(), file.weights()};
    for (auto& w : listing.weights) w.data = nullptr;  // unmapped when `file` goes
    return listing;
  };
  auto toJs = [](Napi::Env env, EngineListing& listing) -> Napi::Value {
    Napi::Object out = Napi::Object::New(env);
    out.Set("checksum", listing.checksum);
    out.Set("headerJson", listing.headerJson);
    Napi::Array weights = Napi::Array::New(env, listing.weights.size());
    for (size_t i = 0; i < listing.weights.size(); ++i) {
      const auto& w = listing.weights[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", w.name);
      o.Set("dtype", kiln::dtypeName(w.dtype));
      o.Set("shape", shapeArray(env, w.shape));
      o.Set("offset", static_cast<double>(w.offset));
      o.Set("byteLength", static_cast<double>(w.byteLength));
      weights.Set(static_cast<uint32_t>(i), o);
    }
    out.Set("weights", weights);
    return out;
  };
  return queueTask(env, "kiln.inspectEngine", std::move(work), toJs);
}

// ---- GGUF: readGguf, writeSafetensorsFromGguf, writeGguf -----------------------------------------

// gguf_type names as gguf.md spells them, indexed by id.
const char* const kGgufValueTypeNames[] = {"UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32",
                                           "BOOL", "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64"};

bool parseGgufValueType(const std::string& name, kiln::GgufValueType* out) {
  for (uint32_t i = 0; i < 13; ++i) {
    if (name == kGgufValueTypeNames[i]) {
      *out = static_cast<kiln::GgufValueType>(i);
      return true;
    }
  }
  return false;
}

Napi::Value ggufScalar(Napi::Env env, kiln::GgufValueType type, double number) {
  if (type == kiln::GgufValueType::BOOL) return Napi::Boolean::New(env, number != 0);
  return Napi::Number::New(env, number);
}

Napi::Value ReadGguf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ArgReader args(env);
  std::string path;
  if (!args.nonEmptyString(info[0], "path", &path)) return rejectArgs(env, args, "readGguf");
  auto work = [path]() { return std::make_unique<kiln::GgufFile>(path); };
  auto toJs = [path](Napi::Env env, std::unique_ptr<kiln::GgufFile>& file) -> Napi::Value {
    Napi::Object out = Napi::Object::New(env);
    out.Set("path", path);
    out.Set("fileSize", static_cast<double>(file->fileSize()));
    out.Set("version", file->version());
    out.Set("alignment", static_cast<double>(file->alignment()));
    // An array of entries, not an object: keys are untrusted ("__proto__" must stay a plain key).
    const auto& metadata = file->metadata();
    Napi::Array entries = Napi::Array::New(env, metadata.size());
    for (size_t i = 0; i < metadata.size(); ++i) {
      const kiln::GgufValue& v = metadata[i].second;
      Napi::Object o = Napi::Object::New(env);
      o.Set("key", metadata[i].first);
      o.Set("type", kGgufValueTypeNames[static_cast<uint32_t>(v.type)]);
      if (v.type == kiln::GgufValueType::STRING) {
        o.Set("value", v.string);
      } else if (v.type == kiln::GgufValueType::ARRAY) {
        o.Set("itemType", kGgufValueTypeNames[static_cast<uint32_t>(v.itemType)]);
        const bool strings = v.itemType == kiln::GgufValueType::STRING;
        const size_t n = strings ? v.strings.size() : v.numbers.size();
        Napi::Array items = Napi::Array::New(env, n);
        for (size_t j = 0; j < n; ++j) {
          items.Set(static_cast<uint32_t>(j), strings ? Napi::String::New(env, v.strings[j]) : ggufScalar(env, v.itemType, v.numbers[j]));
        }
        o.Set("value", items);
      } else {
        o.Set("value", ggufScalar(env, v.type, v.number));
      }
      entries.Set(static_cast<uint32_t>(i), o);
    }
    out.Set("metadata", entries);
    const auto& list = file->tensors();
    Napi::Array tensors = Napi::Array::New(env, list.size());
    for (size_t i = 0; i < list.size(); ++i) {
      const auto& t = list[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", t.name);
      o.Set("type", kiln::ggmlTypeName(t.type));
      o.Set("dims", shapeArray(env, t.dims));
      o.Set("shape", shapeArray(env, t.shape()));
      o.Set("byteOffset", static_cast<double>(t.byteOffset));
      o.Set("byteLength", static_cast<double>(t.byteLength));
      tensors.Set(static_cast<uint32_t>(i), o);
    }
    out.Set("tensors", tensors);
    file.reset();  // unmapped here, on the JS thread, once nothing points into it
    return out;
  };
  return queueTask(env, "kiln.readGguf", std::move(work), toJs);
}

Napi::Value WriteSafetensorsFromGguf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ArgReader args(env);
  Napi::Object options;
  Napi::Value field;
  std::string gguf, path;
  std::map<std::string, std::string> metadata;
  std::vector<kiln::GgufImportSpec> tensors;
  bool rejectNonFinite = false;
  auto read = [&]() -> bool {
    if (!args.object(info[0], "options", &options)) return false;
    if (!args.get(options, "gguf", &field) || !args.nonEmptyString(field, "options.gguf", &gguf)) return false;
    if (!args.get(options, "path", &field) || !args.nonEmptyString(field, "options.path", &path)) return false;
    if (!args.optionalBoolean(options, "rejectNonFinite", "options.rejectNonFinite", &rejectNonFinite)) return false;
    Napi::Array list;
    if (!args.get(options, "tensors", &field) || !args.array(field, "options.tensors", &list)) return false;
    for (uint32_t i = 0; i < list.Length(); ++i) {
      const std::string w = "options.tensors[" + std::to_string(i) + "]";
      Napi::Value item;
      Napi::Object obj;
      kiln::GgufImportSpec spec;
      int64_t heads = 0;
      if (!args.element(list, i, &item) || !args.object(item, w, &obj)) return false;
      if (!args.get(obj, "name", &field) || !args.nonEmptyString(field, w + ".name", &spec.name)) return false;
      if (!args.get(obj, "tensor", &field) || !args.nonEmptyString(field, w + ".tensor", &spec.tensor)) return false;
      if (!args.get(obj, "dtype", &field) || !args.dtype(field, w + ".dtype", &spec.dtype)) return false;
      if (!args.get(obj, "unpermuteHeads", &field)) return false;
      if (!field.IsUndefined() && !args.integer(field, w + ".unpermuteHeads", &heads)) return false;
      if (heads > 1 << 20) return args.fail(w + ".unpermuteHeads is too large");
      spec.unpermuteHeads = static_cast<uint32_t>(heads);
      if (!args.get(obj, "valueOffset", &field)) return false;
      if (!field.IsUndefined()) {
        if (!field.IsNumber() || !std::isfinite(field.As<Napi::Number>().DoubleValue())) return args.fail(w + ".valueOffset must be a finite number");
        spec.valueOffset = field.As<Napi::Number>().FloatValue();
      }
      if (!args.optionalBoolean(obj, "transpose", w + ".transpose", &spec.transpose)) return false;
      tensors.push_back(std::move(spec));
    }
    return true;
  };
  if (!read()) return rejectArgs(env, args, "writeSafetensorsFromGguf");
  auto work = [gguf, path, metadata = std::move(metadata), tensors = std::move(tensors), rejectNonFinite]() {
    kiln::writeSafetensorsFromGguf(gguf, path, metadata, tensors, rejectNonFinite);
    return Done{};
  };
  return queueTask(env, "kiln.writeSafetensorsFromGguf", std::move(work), undefinedResult);
}

// A JS value as a GGUF number of `type`: integers in the type's range, finite floats, booleans for BOOL.
bool ggufNumber(ArgReader& args, const Napi::Value& v, kiln::GgufValueType type, const std::string& what, double* out) {
  using T = kiln::GgufValueType;
  if (type == T::BOOL) {
    if (!v.IsBoolean()) return args.fail(what + " must be a boolean");
    *out = v.As<Napi::Boolean>().Value() ? 1 : 0;
    return true;
  }
  if (!v.IsNumber()) return args.fail(what + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) return args.fail(what + " must be finite");
  if (type == T::FLOAT32 || type == T::FLOAT64) {
    *out = d;
    return true;
  }
  double lo = 0, hi = kMaxSafeInteger;
  switch (type) {
    case T::UINT8: hi = 255; break;
    case T::INT8: lo = -128; hi = 127; break;
    case T::UINT16: hi = 65535; break;
    case T::INT16: lo = -32768; hi = 32767; break;
    case T::UINT32: hi = 4294967295.0; break;
    case T::INT32: lo = -2147483648.0; hi = 2147483647.0; break;
    case T::INT64: lo = -kMaxSafeInteger; break;
    default: break;
  }
  if (d != std::floor(d) || d < lo || d > hi) return args.fail(what + " must be an integer in the range of " + kGgufValueTypeNames[static_cast<uint32_t>(type)]);
  *out = d;
  return true;
}

Napi::Value WriteGguf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ArgReader args(env);
  Napi::Object options;
  Napi::Value field;
  std::string path;
  std::vector<std::pair<std::string, kiln::GgufValue>> metadata;
  std::vector<kiln::GgufTensorWriteSpec> tensors;
  int64_t alignment = 32;
  auto read = [&]() -> bool {
    if (!args.object(info[0], "options", &options)) return false;
    if (!args.get(options, "path", &field) || !args.nonEmptyString(field, "options.path", &path)) return false;
    if (!args.get(options, "alignment", &field)) return false;
    if (!field.IsUndefined() && !args.integer(field, "options.alignment", &alignment)) return false;
    if (alignment == 0 || alignment > 65536 || (alignment & (alignment - 1)) != 0) return args.fail("options.alignment must be a power of two up to 65536");
    Napi::Array list;
    if (!args.get(options, "metadata", &field) || !args.array(field, "options.metadata", &list)) return false;
    for (uint32_t i = 0; i < list.Length(); ++i) {
      const std::string w = "options.metadata[" + std::to_string(i) + "]";
      Napi::Value item, value;
      Napi::Object obj;
      std::string key, typeName;
      kiln::GgufValue v;
      if (!args.element(list, i, &item) || !args.object(item, w, &obj)) return false;
      if (!args.get(obj, "key", &field) || !args.nonEmptyString(field, w + ".key", &key)) return false;
      if (!args.get(obj, "type", &field) || !args.string(field, w + ".type", &typeName)) return false;
      if (!parseGgufValueType(typeName, &v.type)) return args.fail(w + ".type \"" + typeName + "\" is not a GGUF value type");
      if (!args.get(obj, "value", &value)) return false;
      if (v.type == kiln::GgufValueType::STRING) {
        if (!args.string(value, w + ".value", &v.string)) return false;
      } else if (v.type == kiln::GgufValueType::ARRAY) {
        if (!args.get(obj, "itemType", &field) || !args.string(field, w + ".itemType", &typeName)) return false;
        if (!parseGgufValueType(typeName, &v.itemType) || v.itemType == kiln::GgufValueType::ARRAY) {
          return args.fail(w + ".itemType \"" + typeName + "\" is not a GGUF scalar type");
        }
        Napi::Array items;
        if (!args.array(value, w + ".value", &items)) return false;
        for (uint32_t j = 0; j < items.Length(); ++j) {
          Napi::Value x;
          const std::string wj = w + ".value[" + std::to_string(j) + "]";
          if (!args.element(items, j, &x)) return false;
          if (v.itemType == kiln::GgufValueType::STRING) {
            std::string s;
            if (!args.string(x, wj, &s)) return false;
            v.strings.push_back(std::move(s));
          } else {
            double d;
            if (!ggufNumber(args, x, v.itemType, wj, &d)) return false;
            v.numbers.push_back(d);
          }
        }
      } else if (!ggufNumber(args, value, v.type, w + ".value", &v.number)) {
        return false;
      }
      metadata.emplace_back(std::move(key), std::move(v));
    }
    if (!args.get(options, "tensors", &field) || !args.array(field, "options.tensors", &list)) return false;
    for (uint32_t i = 0; i < list.Length(); ++i) {
      const std::string w = "options.tensors[" + std::to_string(i) + "]";
      Napi::Value item;
      Napi::Object obj;
      kiln::GgufTensorWriteSpec spec;
      std::string typeName;
      int64_t heads = 0;
      if (!args.element(list, i, &item) || !args.object(item, w, &obj)) return false;
      if (!args.get(obj, "name", &field) || !args.nonEmptyString(field, w + ".name", &spec.name)) return false;
      if (!args.get(obj, "type", &field) || !args.string(field, w + ".type", &typeName)) return false;
      if (!kiln::parseGgmlTypeName(typeName, &spec.type) ||
          !(spec.type == kiln::GgmlType::F32 || spec.type == kiln::GgmlType::F16 || spec.type == kiln::GgmlType::BF16 ||
            spec.type == kiln::GgmlType::Q8_0 || spec.type == kiln::GgmlType::Q4_0)) {
        return args.fail(w + ".type must be F32, F16, BF16, Q8_0 or Q4_0, got \"" + typeName + "\"");
      }
      Napi::Array sources;
      if (!args.get(obj, "sources", &field) || !args.array(field, w + ".sources", &sources)) return false;
      if (sources.Length() == 0) return args.fail(w + ".sources must not be empty");
      for (uint32_t j = 0; j < sources.Length(); ++j) {
        const std::string ws = w + ".sources[" + std::to_string(j) + "]";
        Napi::Value src;
        Napi::Object srcObj;
        kiln::GgufTensorSource source;
        if (!args.element(sources, j, &src) || !args.object(src, ws, &srcObj)) return false;
        if (!args.get(srcObj, "file", &field) || !args.nonEmptyString(field, ws + ".file", &source.file)) return false;
        if (!args.get(srcObj, "tensor", &field) || !args.nonEmptyString(field, ws + ".tensor", &source.tensor)) return false;
        spec.sources.push_back(std::move(source));
      }
      if (!args.get(obj, "permuteHeads", &field)) return false;
      if (!field.IsUndefined() && !args.integer(field, w + ".permuteHeads", &heads)) return false;
      if (heads > 1 << 20) return args.fail(w + ".permuteHeads is too large");
      spec.permuteHeads = static_cast<uint32_t>(heads);
      if (!args.get(obj, "valueOffset", &field)) return false;
      if (!field.IsUndefined()) {
        if (!field.IsNumber() || !std::isfinite(field.As<Napi::Number>().DoubleValue())) return args.fail(w + ".valueOffset must be a finite number");
        spec.valueOffset = field.As<Napi::Number>().FloatValue();
      }
      tensors.push_back(std::move(spec));
    }
    return true;
  };
  if (!read()) return rejectArgs(env, args, "writeGguf");
  auto work = [path, metadata = std::move(metadata), tensors = std::move(tensors), alignment = static_cast<uint32_t>(alignment)]() {
    return kiln::writeGguf(path, metadata, tensors, alignment);
  };
  auto toJs = [](Napi::Env env, kiln::GgufWriteResult& result) -> Napi::Value {
    Napi::Object out = Napi::Object::New(env);
    out.Set("fileSize", static_cast<double>(result.fileSize));
    Napi::Array errors = Napi::Array::New(env, result.errors.size());
    for (size_t i = 0; i < result.errors.size(); ++i) {
      const auto& e = result.errors[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", e.name);
      o.Set("rms", e.rms);
      o.Set("rmsError", e.rmsError);
      o.Set("maxAbsError", e.maxAbsError);
      errors.Set(static_cast<uint32_t>(i), o);
    }
    out.Set("errors", errors);
    return out;
  };
  return queueTask(env, "kiln.writeGguf", std::move(work), toJs);
}

}  // namespace

void InitFiles(Napi::Env env, Napi::Object exports) {
  exports.Set("cpuInfo", Napi::Function::New(env, CpuInfo, "cpuInfo"));
  exports.Set("cudaInfo", Napi::Function::New(env, CudaInfo, "cudaInfo"));
  exports.Set("readSafetensors", Napi::Function::New(env, ReadSafetensors, "readSafetensors"));
  exports.Set("writeSafetensors", Napi::Function::New(env, WriteSafetensors, "writeSafetensors"));
  exports.Set("writeEngine", Napi::Function::New(env, WriteEngine, "writeEngine"));
  exports.Set("inspectEngine", Napi::Function::New(env, InspectEngine, "inspectEngine"));
  exports.Set("readGguf", Napi::Function::New(env, ReadGguf, "readGguf"));
  exports.Set("writeSafetensorsFromGguf", Napi::Function::New(env, WriteSafetensorsFromGguf, "writeSafetensorsFromGguf"));
  exports.Set("writeGguf", Napi::Function::New(env, WriteGguf, "writeGguf"));
}
