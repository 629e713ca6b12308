// exports.testing: synchronous, test-only bindings to single kernels, so that native/test/kernels.test.ts
// can compare each against a scalar reference. Inputs are typed arrays and plain numbers; every length,
// stride and index is checked before a kernel runs, and a mismatch throws a TypeError (wrong kind of
// value) or RangeError (wrong size or index) naming the argument.
#include <napi.h>

#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <cstring>
#include <vector>

#include "kiln/dtype.h"
#include "kiln/backends/cpu/kernels/kernels.h"
#include "kiln/thread_pool.h"

namespace {

using kiln::DType;
using kiln::Isa;
using kiln::KernelEnv;

// Largest value accepted for a size, stride or count: keeps every product of two of them within int64.
constexpr int64_t kMaxDim = int64_t{1} << 31;

void throwType(Napi::Env env, const std::string& msg) { Napi::TypeError::New(env, msg).ThrowAsJavaScriptException(); }
void throwRange(Napi::Env env, const std::string& msg) {
  Napi::RangeError::New(env, msg).ThrowAsJavaScriptException();
}

// A zeroed Float32Array of n elements, or false with a JS error pending (too large to allocate).
bool newOutput(Napi::Env env, int64_t n, Napi::Float32Array* out) {
  if (n > (int64_t{1} << 32)) {
    throwRange(env, "testing: output of " + std::to_string(n) + " floats is too large");
    return false;
  }
  *out = Napi::Float32Array::New(env, static_cast<size_t>(n));
  return !env.IsExceptionPending();
}

// Pools are cached per thread count so that a benchmark does not pay for thread start-up on every call.
kiln::ThreadPool* poolFor(int threads) {
  static std::mutex mutex;
  static std::map<int, std::unique_ptr<kiln::ThreadPool>> pools;
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = pools[threads];
  if (!slot) slot.reset(new kiln::ThreadPool(threads));
  return slot.get();
}

// Reads the properties of one options object; each getter throws the JS error and returns false on failure.
class Options {
 public:
  Options(const Napi::CallbackInfo& info, const char* fn) : env_(info.Env()), fn_(fn) {
    if (info.Length() < 1 || !info[0].IsObject() || info[0].IsTypedArray() || info[0].IsArray()) {
      throwType(env_, std::string("testing.") + fn + ": expected one options object");
      ok_ = false;
    } else {
      obj_ = info[0].As<Napi::Object>();
    }
  }
  bool ok() const { return ok_ && !env_.IsExceptionPending(); }
  Napi::Env env() const { return env_; }
  std::string where(const char* key) const { return std::string("testing.") + fn_ + ": '" + key + "'"; }

  bool has(const char* key) {
    Napi::Value v = obj_.Get(key);
    return !v.IsUndefined() && !v.IsNull();
  }

  // An integer in [minValue, kMaxDim]; `def` when absent and optional (def >= minValue).
  bool integer(const char* key, int64_t* out, int64_t minValue, bool optional = false, int64_t def = 0) {
    Napi::Value v = obj_.Get(key);
    if (v.IsUndefined() && optional) {
      *out = def;
      return true;
    }
    if (!v.IsNumber()) return fail(throwType, where(key) + " must be a number");
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d) || std::floor(d) != d || d < static_cast<double>(minValue) || d > static_cast<double>(kMaxDim)) {
      return fail(throwRange, where(key) + " must be an integer >= " + std::to_string(minValue) + ", got " +
                                  v.ToString().Utf8Value());
    }
    *out = static_cast<int64_t>(d);
    return true;
  }

  bool number(const char* key, float* out, bool optional = false, float def = 0.0f) {
    Napi::Value v = obj_.Get(key);
    if (v.IsUndefined() && optional) {
      *out = def;
      return true;
    }
    if (!v.IsNumber()) return fail(throwType, where(key) + " must be a number");
    *out = static_cast<float>(v.As<Napi::Number>().DoubleValue());
    return true;
  }

  bool boolean(const char* key, bool* out, bool def) {
    Napi::Value v = obj_.Get(key);
    if (v.IsUndefined()) {
      *out = def;
      return true;
    }
    if (!v.IsBoolean()) return fail(throwType, where(key) + " must be a boolean");
    *out = v.As<Napi::Boolean>().Value();
    return true;
  }

  template <typename T>
  bool typed(const char* key, napi_typedarray_type type, const char* typeName, T** data, int64_t* length,
             bool optional = false) {
    return typedFrom(obj_.Get(key), where(key), type, typeName, optional, data, length);
  }

  template <typename T>
  bool typedFrom(Napi::Value v, const std::string& what, napi_typedarray_type type, const char* typeName,
                 bool optional, T** data, int64_t* length) {
    if ((v.IsUndefined() || v.IsNull()) && optional) {
      *data = nullptr;
      *length = 0;
      return true;
    }
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type) {
      return fail(throwType, what + " must be a " + typeName);
    }
    Napi::TypedArrayOf<T> a = v.As<Napi::TypedArrayOf<T>>();
    *data = a.Data();
    *length = static_cast<int64_t>(a.ElementLength());
    return true;
  }

  // A weight array and its dtype key: Float32Array for 'float32', Uint16Array (raw bits) for 16-bit types,
  // Int8Array (the codes; the scales come separately) for 'int8', Uint8Array (e4m3 codes; one scale comes
  // separately) for 'float8_e4m3fn', where `allowInt8` (linear only).
  bool weights(const char* key, const char* dtypeKey, const void** data, DType* dt, int64_t* length,
               bool allowInt8 = false) {
    Napi::Value name = obj_.Get(dtypeKey);
    if (!name.IsString()) return fail(throwType, where(dtypeKey) + " must be 'float32', 'float16' or 'bfloat16'");
    const std::string s = name.As<Napi::String>().Utf8Value();
    const bool known = kiln::parseDTypeName(s, dt);
    if (!known || *dt == DType::I32 || (isQuantizedType(*dt) && !allowInt8)) {
      return fail(throwRange, where(dtypeKey) + " must be 'float32', 'float16'" +
                                  (allowInt8 ? ", 'bfloat16', 'int8', 'float8_e4m3fn' or 'q8_0'" : " or 'bfloat16'") + ", got '" + s + "'");
    }
    if (*dt == DType::Q8_0) {  // the blocks' bytes
      uint8_t* p;
      if (!typed(key, napi_uint8_array, "Uint8Array (q8_0 blocks)", &p, length)) return false;
      *data = p;
    } else if (*dt == DType::F8E4M3) {
      uint8_t* p;
      if (!typed(key, napi_uint8_array, "Uint8Array (e4m3 codes)", &p, length)) return false;
      *data = p;
    } else if (*dt == DType::I8) {
      int8_t* p;
      if (!typed(key, napi_int8_array, "Int8Array (int8 codes)", &p, length)) return false;
      *data = p;
    } else if (*dt == DType::F32) {
      float* p;
      if (!typed(key, napi_float32_array, "Float32Array", &p, length)) return false;
      *data = p;
    } else {
      uint16_t* p;
      if (!typed(key, napi_uint16_array, "Uint16Array (raw 16-bit weights)", &p, length)) return false;
      *data = p;
    }
    return true;
  }

  // isa ('generic' default, or 'avx2', 'avx512', 'avx512_bf16' where the CPU has it) and threads (default 1).
  bool kernelEnv(KernelEnv* ke) {
    ke->isa = Isa::Generic;
    Napi::Value v = obj_.Get("isa");
    if (!v.IsUndefined()) {
      const std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : std::string();
      Isa isa;
      if (!kiln::parseIsa(s.c_str(), &isa)) {
        return fail(throwRange, where("isa") + " must be 'generic', 'avx2', 'avx512' or 'avx512_bf16'");
      }
      if (isa > kiln::detectIsa()) {
        return fail(throwRange, where("isa") + ": this CPU supports at most '" + kiln::isaName(kiln::detectIsa()) + "'");
      }
      ke->isa = isa;
    }
    int64_t threads;
    if (!integer("threads", &threads, 1, true, 1)) return false;
    if (threads > 256) return fail(throwRange, where("threads") + " must be at most 256");
    ke->pool = threads > 1 ? poolFor(static_cast<int>(threads)) : nullptr;
    return true;
  }

  // A [rows, cols] view with row stride `stride` must fit in `length` elements.
  bool matrix(const char* key, int64_t length, int64_t rows, int64_t cols, int64_t stride) {
    if (stride < cols) {
      return fail(throwRange, where(key) + ": row stride " + std::to_string(stride) + " is less than " +
                                  std::to_string(cols) + " columns");
    }
    const int64_t need = rows == 0 ? 0 : (rows - 1) * stride + cols;
    if (length < need) {
      return fail(throwRange, where(key) + " has " + std::to_string(length) + " elements, needs " +
                                  std::to_string(need) + " (" + std::to_string(rows) + " rows of " +
                                  std::to_string(cols) + ", stride " + std::to_string(stride) + ")");
    }
    return true;
  }

  bool exactLength(const char* key, int64_t length, int64_t want) {
    if (length != want) {
      return fail(throwRange, where(key) + " has " + std::to_string(length) + " elements, expected " +
                                  std::to_string(want));
    }
    return true;
  }

  bool range(const std::string& msg) { return fail(throwRange, msg); }

  Napi::Value get(const char* key) { return obj_.Get(key); }

 private:
  bool fail(void (*thrower)(Napi::Env, const std::string&), const std::string& msg) {
    thrower(env_, msg);
    ok_ = false;
    return false;
  }

  Napi::Env env_;
  const char* fn_;
  Napi::Object obj_;
  bool ok_ = true;
};

Napi::Value CpuIsa(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), kiln::isaName(kiln::detectIsa()));
}

// Conversions between float32 and raw 16-bit patterns, element by element.
template <typename In, typename Out, Out (*convert)(In)>
Napi::Value Convert(const Napi::CallbackInfo& info, napi_typedarray_type inType, const char* inName, const char* fn) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != inType) {
    throwType(env, std::string("testing.") + fn + ": expected a " + inName);
    return env.Undefined();
  }
  Napi::TypedArrayOf<In> in = info[0].As<Napi::TypedArrayOf<In>>();
  const size_t n = in.ElementLength();
  Napi::TypedArrayOf<Out> out = Napi::TypedArrayOf<Out>::New(env, n);
  for (size_t i = 0; i < n; ++i) out[i] = convert(in[i]);
  return out;
}

uint16_t toBf16(float f) { return kiln::f32ToBf16(f); }
uint16_t toF16(float f) { return kiln::f32ToF16(f); }
float fromBf16(uint16_t h) { return kiln::bf16ToF32(h); }
float fromF16(uint16_t h) { return kiln::f16ToF32(h); }

Napi::Value F32ToBf16(const Napi::CallbackInfo& info) {
  return Convert<float, uint16_t, toBf16>(info, napi_float32_array, "Float32Array", "f32ToBf16");
}
Napi::Value F32ToF16(const Napi::CallbackInfo& info) {
  return Convert<float, uint16_t, toF16>(info, napi_float32_array, "Float32Array", "f32ToF16");
}
Napi::Value Bf16ToF32(const Napi::CallbackInfo& info) {
  return Convert<uint16_t, float, fromBf16>(info, napi_uint16_array, "Uint16Array", "bf16ToF32");
}
Napi::Value F16ToF32(const Napi::CallbackInfo& info) {
  return Convert<uint16_t, float, fromF16>(info, napi_uint16_array, "Uint16Array", "f16ToF32");
}

Napi::Value Embedding(const Napi::CallbackInfo& info) {
  Options o(info, "embedding");
  Napi::Env env = info.Env();
  int32_t* ids;
  int64_t numTokens, hidden, outStride, tableLen;
  const void* table;
  DType dt;
  float scale;
  KernelEnv ke;
  if (!o.ok() || !o.typed("ids", napi_int32_array, "Int32Array", &ids, &numTokens) ||
      !o.weights("table", "tableDtype", &table, &dt, &tableLen) || !o.integer("hidden", &hidden, 1) ||
      !o.number("scale", &scale, true, 1.0f) || !o.integer("outStride", &outStride, hidden, true, hidden) ||
      !o.kernelEnv(&ke)) {
    return env.Undefined();
  }
  if (tableLen % hidden != 0) return o.range(o.where("table") + " length is not a multiple of hidden"), env.Undefined();
  const int64_t vocab = tableLen / hidden;
  for (int64_t t = 0; t < numTokens; ++t) {
    if (ids[t] < 0 || ids[t] >= vocab) {
      o.range(o.where("ids") + "[" + std::to_string(t) + "] = " + std::to_string(ids[t]) + " is outside the vocabulary of " +
              std::to_string(vocab));
      return env.Undefined();
    }
  }
  Napi::Float32Array out;
  if (!newOutput(env, numTokens * outStride, &out)) return env.Undefined();
  kiln::embeddingKernel(ke, ids, numTokens, table, dt, hidden, scale, out.Data(), outStride);
  return out;
}

Napi::Value Linear(const Napi::CallbackInfo& info) {
  Options o(info, "linear");
  Napi::Env env = info.Env();
  float *x, *bias;
  int64_t xLen, biasLen, wLen, rows, K, N, xStride, yStride;
  const void* w;
  DType wdt;
  KernelEnv ke;
  bool bf16Activations;
  float* scales = nullptr;
  int64_t scalesLen = 0;
  if (!o.ok() || !o.integer("rows", &rows, 0) || !o.integer("K", &K, 0) || !o.integer("N", &N, 0) ||
      !o.integer("xStride", &xStride, 0, true, K) || !o.integer("yStride", &yStride, 0, true, N) ||
      !o.typed("x", napi_float32_array, "Float32Array", &x, &xLen) || !o.matrix("x", xLen, rows, K, xStride) ||
      !o.weights("weight", "weightDtype", &w, &wdt, &wLen, /*allowInt8=*/true) ||
      (wdt == DType::Q8_0 && K % kiln::kQ8_0BlockElements != 0 && !o.range(o.where("K") + " must be a multiple of 32 for q8_0 weights")) ||
      !o.exactLength("weight", wLen, wdt == DType::Q8_0 ? static_cast<int64_t>(kiln::q8_0MatrixBytes(N, K)) : N * K) ||
      !o.typed("scales", napi_float32_array, "Float32Array", &scales, &scalesLen, !isQuantizedType(wdt) || wdt == DType::Q8_0) ||
      (wdt == DType::I8 && !o.exactLength("scales", scalesLen, N)) ||
      (wdt == DType::F8E4M3 && !o.exactLength("scales", scalesLen, 1)) ||
      !o.typed("bias", napi_float32_array, "Float32Array", &bias, &biasLen, true) ||
      (bias && !o.exactLength("bias", biasLen, N)) || !o.matrix("yStride", rows * yStride, rows, N, yStride) ||
      !o.boolean("bf16Activations", &bf16Activations, false) || !o.kernelEnv(&ke)) {
    return env.Undefined();
  }
  // int8Activations: 'auto' (default), 'float', 'int8', 'int8x2' or 'adaptive', as KILN_CPU_INT8_ACTIVATIONS sets it.
  if (Napi::Value v = info[0].As<Napi::Object>().Get("int8Activations"); !v.IsUndefined()) {
    const std::string mode = v.IsString() ? v.As<Napi::String>().Utf8Value() : std::string();
    if (!kiln::parseInt8Activations(mode.c_str(), &ke.int8Act)) {
      o.range(o.where("int8Activations") + " must be 'auto', 'float', 'int8', 'int8x2' or 'adaptive'");
      return env.Undefined();
    }
  }
  if (scales && !isQuantizedType(wdt)) {
    o.range(o.where("scales") + " is for int8 and float8_e4m3fn weights only");
    return env.Undefined();
  }
  // int8: the engine's layout, codes then row scales, at an odd offset so unaligned scales are exercised.
  std::vector<uint8_t> packed;
  if (wdt == DType::I8) {
    packed.resize(static_cast<size_t>(1 + N * K + 4 * N));
    std::memcpy(packed.data() + 1, w, static_cast<size_t>(N * K));
    std::memcpy(packed.data() + 1 + N * K, scales, static_cast<size_t>(4 * N));
    w = packed.data() + 1;
  }
  // FP8: the engine's layout, codes then the matrix's scale, likewise at an odd offset.
  if (wdt == DType::F8E4M3) {
    packed.resize(static_cast<size_t>(1 + N * K + 4));
    std::memcpy(packed.data() + 1, w, static_cast<size_t>(N * K));
    std::memcpy(packed.data() + 1 + N * K, scales, 4);
    w = packed.data() + 1;
  }
  Napi::Float32Array y;
  if (!newOutput(env, rows * yStride, &y)) return env.Undefined();
  kiln::linearKernel(ke, x, rows, xStride, w, wdt, N, K, bias, y.Data(), yStride, bf16Activations);
  return y;
}

// linearInt4Kernel on the engine's int4 layout (dtype.h): `codes` [N * K / 2] packed nibbles, `scales`
// [N * K / groupSize] bfloat16 bits, copied behind the codes as in an engine; `misalign` puts the pair at an
// odd address, so the kernel's unaligned-scales copy runs; `floatActivations` runs the W4A16 reference path.
Napi::Value LinearInt4(const Napi::CallbackInfo& info) {
  Options o(info, "linearInt4");
  Napi::Env env = info.Env();
  float *x, *bias;
  uint8_t* codes;
  uint16_t* scales;
  int64_t xLen, biasLen, codesLen, scalesLen, rows, K, N, G, xStride, yStride;
  KernelEnv ke;
  bool misalign, floatActivations;
  if (!o.ok() || !o.integer("rows", &rows, 0) || !o.integer("K", &K, 0) || !o.integer("N", &N, 0) ||
      !o.integer("groupSize", &G, 1) || !o.integer("xStride", &xStride, 0, true, K) ||
      !o.integer("yStride", &yStride, 0, true, N)) {
    return env.Undefined();
  }
  if (G % kiln::kInt4Block != 0 || K % G != 0) {
    o.range(o.where("groupSize") + " must be a multiple of 32 dividing K");
    return env.Undefined();
  }
  if (!o.typed("x", napi_float32_array, "Float32Array", &x, &xLen) || !o.matrix("x", xLen, rows, K, xStride) ||
      !o.typed("codes", napi_uint8_array, "Uint8Array", &codes, &codesLen) || !o.exactLength("codes", codesLen, N * K / 2) ||
      !o.typed("scales", napi_uint16_array, "Uint16Array", &scales, &scalesLen) ||
      !o.exactLength("scales", scalesLen, N * (K / G)) ||
      !o.typed("bias", napi_float32_array, "Float32Array", &bias, &biasLen, true) ||
      (bias && !o.exactLength("bias", biasLen, N)) || !o.matrix("yStride", rows * yStride, rows, N, yStride) ||
      !o.boolean("misalign", &misalign, false) || !o.boolean("floatActivations", &floatActivations, false) ||
      !o.kernelEnv(&ke)) {
    return env.Undefined();
  }
  const size_t at = misalign ? 1 : 0;
  std::vector<uint8_t> packed(at + static_cast<size_t>(codesLen + 2 * scalesLen) + 64);
  // std::vector's storage is at least 16-byte aligned; `at` decides the scales' alignment.
  std::memcpy(packed.data() + at, codes, static_cast<size_t>(codesLen));
  std::memcpy(packed.data() + at + codesLen, scales, static_cast<size_t>(2 * scalesLen));
  Napi::Float32Array y;
  if (!newOutput(env, rows * yStride, &y)) return env.Undefined();
  kiln::linearInt4Kernel(ke, x, rows, xStride, packed.data() + at, N, K, G, bias, y.Data(), yStride, floatActivations);
  return y;
}

Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  Options o(info, "rmsNorm");
  Napi::Env env = info.Env();
  float* x;
  int64_t xLen, wLen, rows, H, xStride, yStride;
  const void* w;
  DType wdt;
  float eps, weightOffset;
  int64_t groupSize;
  KernelEnv ke;
  if (!o.ok() || !o.integer("rows", &rows, 0) || !o.integer("H", &H, 1) ||
      !o.integer("groupSize", &groupSize, 1, true, H) ||
      !o.integer("xStride", &xStride, 0, true, H) || !o.integer("yStride", &yStride, 0, true, H) ||
      !o.typed("x", napi_float32_array, "Float32Array", &x, &xLen) || !o.matrix("x", xLen, rows, H, xStride) ||
      !o.weights("weight", "weightDtype", &w, &wdt, &wLen) || !o.exactLength("weight", wLen, groupSize) ||
      !o.number("eps", &eps) || !o.number("weightOffset", &weightOffset, true, 0.0f) ||
      !o.matrix("yStride", rows * yStride, rows, H, yStride) || !o.kernelEnv(&ke)) {
    return env.Undefined();
  }
  Napi::Float32Array y;
  if (!newOutput(env, rows * yStride, &y)) return env.Undefined();
  if (H % groupSize != 0) return o.range(o.where("groupSize") + " does not divide H"), env.Undefined();
  if (groupSize == H) {
    kiln::rmsNormKernel(ke, x, rows, xStride, w, wdt, H, eps, weightOffset, y.Data(), yStride);
  } else {
    kiln::rmsNormGroupsKernel(ke, x, rows, xStride, w, wdt, H / groupSize, groupSize, eps, weightOffset, y.Data(),
                              yStride);
  }
  return y;
}

// add, mul, swiglu: two [rows, cols] inputs named aKey and bKey.
using BinaryKernel = void (*)(const KernelEnv&, const float*, int64_t, const float*, int64_t, int64_t, int64_t, float*,
                              int64_t);
Napi::Value Binary(const Napi::CallbackInfo& info, const char* fn, const char* aKey, const char* aStrideKey,
                   const char* bKey, const char* bStrideKey, BinaryKernel kernel) {
  Options o(info, fn);
  Napi::Env env = info.Env();
  float *a, *b;
  int64_t aLen, bLen, rows, cols, aStride, bStride, outStride;
  KernelEnv ke;
  if (!o.ok() || !o.integer("rows", &rows, 0) || !o.integer("cols", &cols, 0) ||
      !o.integer(aStrideKey, &aStride, 0, true, cols) || !o.integer(bStrideKey, &bStride, 0, true, cols) ||
      !o.integer("outStride", &outStride, 0, true, cols) ||
      !o.typed(aKey, napi_float32_array, "Float32Array", &a, &aLen) || !o.matrix(aKey, aLen, rows, cols, aStride) ||
      !o.typed(bKey, napi_float32_array, "Float32Array", &b, &bLen) || !o.matrix(bKey, bLen, rows, cols, bStride) ||
      !o.matrix("outStride", rows * outStride, rows, cols, outStride) || !o.kernelEnv(&ke)) {
    return env.Undefined();
  }
  Napi::Float32Array out;
  if (!newOutput(env, rows * outStride, &out)) return env.Undefined();
  kernel(ke, a, aStride, b, bStride, rows, cols, out.Data(), outStride);
  return out;
}

Napi::Value Add(const Napi::CallbackInfo& info) { return Binary(info, "add", "a", "aStride", "b", "bStride", kiln::addKernel); }
Napi::Value Mul(const Napi::CallbackInfo& info) { return Binary(info, "mul", "a", "aStride", "b", "bStride", kiln::mulKernel); }
Napi::Value Swiglu(const Napi::CallbackInfo& info) {
  return Binary(info, "swiglu", "gate", "gateStride", "up", "upStride", kiln::swigluKernel);
}

Napi::Value Silu(const Napi::CallbackInfo& info) {
  Options o(info, "silu");
  Napi::Env env = info.Env();
  float* a;
  int64_t aLen, rows, cols, aStride, outStride;
  KernelEnv ke;
  if (!o.ok() || !o.integer("rows", &rows, 0) || !o.integer("cols", &cols, 0) ||
      !o.integer("aStride", &aStride, 0, true, cols) || !o.integer("outStride", &outStride, 0, true, cols) ||
      !o.typed("a", napi_float32_array, "Float32Array", &a, &aLen) || !o.matrix("a", aLen, rows, cols, aStride) ||
      !o.matrix("outStride", rows * outStride, rows, cols, outStride) || !o.kernelEnv(&ke)) {
    return env.Undefined();
  }
  Napi::Float32Array out;
  if (!newOutput(env, rows * outStride, &out)) return env.Undefined();
  kiln::siluKernel(ke, a, aStride, rows, cols, out.Data(), outStride);
  return out;
}

Napi::Value Rope(const Napi::CallbackInfo& info) {
  Options o(info, "rope");
  Napi::Env env = info.Env();
  float *x, *invFreq;
  int32_t* positions;
  int64_t xLen, posLen, freqLen, numTokens, numHeads, headDim, rotaryDim, xStride, yStride;
  bool interleaved;
  float scaling;
  KernelEnv ke;
  if (!o.ok() || !o.integer("numTokens", &numTokens, 0) || !o.integer("numHeads", &numHeads, 1) ||
      !o.integer("headDim", &headDim, 1) || !o.integer("rotaryDim", &rotaryDim, 0) ||
      !o.integer("xStride", &xStride, 0, true, numHeads * headDim) ||
      !o.integer("yStride", &yStride, 0, true, numHeads * headDim) ||
      !o.typed("x", napi_float32_array, "Float32Array", &x, &xLen) ||
      !o.matrix("x", xLen, numTokens, numHeads * headDim, xStride) ||
      !o.typed("positions", napi_int32_array, "Int32Array", &positions, &posLen) ||
      !o.exactLength("positions", posLen, numTokens) ||
      !o.typed("invFreq", napi_float32_array, "Float32Array", &invFreq, &freqLen) ||
      !o.boolean("interleaved", &interleaved, false) || !o.number("attentionScaling", &scaling, true, 1.0f) ||
      !o.matrix("yStride", numTokens * yStride, numTokens, numHeads * headDim, yStride) || !o.kernelEnv(&ke)) {
    return env.Undefined();
  }
  if (rotaryDim % 2 != 0 || rotaryDim > headDim) {
    o.range(o.where("rotaryDim") + " must be even and at most headDim");
    return env.Undefined();
  }
  if (!o.exactLength("invFreq", freqLen, rotaryDim / 2)) return env.Undefined();
  Napi::Float32Array y;
  if (!newOutput(env, numTokens * yStride, &y)) return env.Undefined();
  kiln::ropeKernel(ke, x, numTokens, xStride, positions, numHeads, headDim, rotaryDim, interleaved, invFreq, scaling,
                   y.Data(), yStride);
  return y;
}

Napi::Value Attention(const Napi::CallbackInfo& info) {
  Options o(info, "attention");
  Napi::Env env = info.Env();
  float *q, *k, *v, *pool;
  int32_t *positions, *tokenSeq;
  int64_t qLen, kLen, vLen, poolLen, posLen, seqLen, T, numHeads, numKvHeads, headDim, qStride, kStride, vStride,
      outStride, tokensPerBlock, numLayers, layer, slidingWindow;
  float scale, softcap;
  float* alibi;
  int64_t alibiLen;
  KernelEnv ke;
  if (!o.ok() || !o.integer("numTokens", &T, 0) || !o.integer("numHeads", &numHeads, 1) ||
      !o.integer("numKvHeads", &numKvHeads, 1) || !o.integer("headDim", &headDim, 1) ||
      !o.integer("qStride", &qStride, 0, true, numHeads * headDim) ||
      !o.integer("kStride", &kStride, 0, true, numKvHeads * headDim) ||
      !o.integer("vStride", &vStride, 0, true, numKvHeads * headDim) ||
      !o.integer("outStride", &outStride, 0, true, numHeads * headDim) ||
      !o.typed("q", napi_float32_array, "Float32Array", &q, &qLen) ||
      !o.matrix("q", qLen, T, numHeads * headDim, qStride) ||
      !o.typed("k", napi_float32_array, "Float32Array", &k, &kLen) ||
      !o.matrix("k", kLen, T, numKvHeads * headDim, kStride) ||
      !o.typed("v", napi_float32_array, "Float32Array", &v, &vLen) ||
      !o.matrix("v", vLen, T, numKvHeads * headDim, vStride) ||
      !o.matrix("outStride", T * outStride, T, numHeads * headDim, outStride) ||
      !o.typed("positions", napi_int32_array, "Int32Array", &positions, &posLen) ||
      !o.exactLength("positions", posLen, T) ||
      !o.typed("tokenSeq", napi_int32_array, "Int32Array", &tokenSeq, &seqLen) ||
      !o.exactLength("tokenSeq", seqLen, T) || !o.integer("tokensPerBlock", &tokensPerBlock, 1) ||
      !o.integer("numLayers", &numLayers, 1, true, 1) || !o.integer("layer", &layer, 0, true, 0) ||
      !o.typed("kvPool", napi_float32_array, "Float32Array", &pool, &poolLen) || !o.number("scale", &scale) ||
      !o.integer("slidingWindow", &slidingWindow, 0, true, 0) || !o.number("softcap", &softcap, true, 0.0f) ||
      !o.typed("alibiSlopes", napi_float32_array, "Float32Array", &alibi, &alibiLen, true) ||
      (alibi && !o.exactLength("alibiSlopes", alibiLen, numHeads)) || !o.kernelEnv(&ke)) {
    return env.Undefined();
  }
  if (numHeads % numKvHeads != 0) return o.range(o.where("numHeads") + " must be a multiple of numKvHeads"), env.Undefined();
  if (layer >= numLayers) return o.range(o.where("layer") + " must be less than numLayers"), env.Undefined();
  // Five factors of up to 2^31 could overflow int64: check the product in double first.
  if (static_cast<double>(numLayers) * 2 * tokensPerBlock * numKvHeads * headDim > static_cast<double>(kMaxDim)) {
    o.range(o.where("kvPool") + ": a block of numLayers * 2 * tokensPerBlock * numKvHeads * headDim floats is too large");
    return env.Undefined();
  }
  const int64_t blockFloats = numLayers * 2 * tokensPerBlock * numKvHeads * headDim;
  if (poolLen % blockFloats != 0) {
    o.range(o.where("kvPool") + " has " + std::to_string(poolLen) + " elements, not a whole number of blocks of " +
            std::to_string(blockFloats));
    return env.Undefined();
  }
  const int64_t numBlocks = poolLen / blockFloats;

  Napi::Value tablesValue = o.get("blockTables");
  if (!tablesValue.IsArray()) return throwType(env, o.where("blockTables") + " must be an array of Int32Array"), env.Undefined();
  Napi::Array tablesArray = tablesValue.As<Napi::Array>();
  const int64_t numSeqs = tablesArray.Length();
  std::vector<const int32_t*> tables(static_cast<size_t>(numSeqs));
  std::vector<int64_t> tableLens(static_cast<size_t>(numSeqs));
  for (int64_t s = 0; s < numSeqs; ++s) {
    int32_t* data;
    const std::string what = o.where("blockTables") + "[" + std::to_string(s) + "]";
    if (!o.typedFrom(tablesArray.Get(static_cast<uint32_t>(s)), what, napi_int32_array, "Int32Array", false, &data,
                     &tableLens[s])) {
      return env.Undefined();
    }
    tables[s] = data;
    for (int64_t i = 0; i < tableLens[s]; ++i) {
      if (data[i] < 0 || data[i] >= numBlocks) {
        o.range(what + "[" + std::to_string(i) + "] = " + std::to_string(data[i]) + " is not a block of the " +
                std::to_string(numBlocks) + "-block pool");
        return env.Undefined();
      }
    }
  }
  // Every position a token writes or reads (0..positions[t]) must have a block in its sequence's table.
  for (int64_t t = 0; t < T; ++t) {
    const std::string what = "[" + std::to_string(t) + "]";
    if (tokenSeq[t] < 0 || tokenSeq[t] >= numSeqs) {
      o.range(o.where("tokenSeq") + what + " = " + std::to_string(tokenSeq[t]) + " is not a sequence index");
      return env.Undefined();
    }
    if (positions[t] < 0 || positions[t] / tokensPerBlock >= tableLens[tokenSeq[t]]) {
      o.range(o.where("positions") + what + " = " + std::to_string(positions[t]) +
              " is negative or beyond its sequence's block table");
      return env.Undefined();
    }
  }

  kiln::StepContext step;
  step.numTokens = static_cast<int32_t>(T);
  step.positions = positions;
  step.tokenSeq = tokenSeq;
  step.numSeqs = static_cast<int32_t>(numSeqs);
  step.blockTables = tables.data();
  step.kv.pool = pool;
  step.kv.numBlocks = static_cast<int32_t>(numBlocks);
  step.kv.numLayers = static_cast<int32_t>(numLayers);
  step.kv.numKvHeads = static_cast<int32_t>(numKvHeads);
  step.kv.headDim = static_cast<int32_t>(headDim);
  step.kv.tokensPerBlock = static_cast<int32_t>(tokensPerBlock);
  Napi::Float32Array out;
  if (!newOutput(env, T * outStride, &out)) return env.Undefined();
  if (softcap < 0) return o.range(o.where("softcap") + " must be >= 0"), env.Undefined();
  kiln::AttentionExtras extras;
  extras.softcap = softcap;
  extras.alibiSlopes = alibi;
  kiln::attentionKernel(ke, step, static_cast<int32_t>(layer), q, qStride, k, kStride, v, vStride, numHeads, numKvHeads,
                        headDim, scale, slidingWindow, extras, out.Data(), outStride);
  return out;
}

Napi::Value LayerNorm(const Napi::CallbackInfo& info) {
  Options o(info, "layerNorm");
  Napi::Env env = info.Env();
  float *x, *bias;
  int64_t xLen, wLen, biasLen, rows, H, xStride, yStride;
  const void* w;
  DType wdt;
  float eps;
  KernelEnv ke;
  if (!o.ok() || !o.integer("rows", &rows, 0) || !o.integer("H", &H, 1) ||
      !o.integer("xStride", &xStride, 0, true, H) || !o.integer("yStride", &yStride, 0, true, H) ||
      !o.typed("x", napi_float32_array, "Float32Array", &x, &xLen) || !o.matrix("x", xLen, rows, H, xStride) ||
      !o.weights("weight", "weightDtype", &w, &wdt, &wLen) || !o.exactLength("weight", wLen, H) ||
      !o.typed("bias", napi_float32_array, "Float32Array", &bias, &biasLen, true) ||
      (bias && !o.exactLength("bias", biasLen, H)) || !o.number("eps", &eps) ||
      !o.matrix("yStride", rows * yStride, rows, H, yStride) || !o.kernelEnv(&ke)) {
    return env.Undefined();
  }
  Napi::Float32Array y;
  if (!newOutput(env, rows * yStride, &y)) return env.Undefined();
  kiln::layerNormKernel(ke, x, rows, xStride, w, wdt, bias, H, eps, y.Data(), yStride);
  return y;
}

// gelu, relu, softcap: one [rows, cols] input `a`; `extra` reads the op's own options.
template <typename Run>
Napi::Value Unary(const Napi::CallbackInfo& info, const char* fn, const Run& run) {
  Options o(info, fn);
  Napi::Env env = info.Env();
  float* a;
  int64_t aLen, rows, cols, aStride, outStride;
  KernelEnv ke;
  if (!o.ok() || !o.integer("rows", &rows, 0) || !o.integer("cols", &cols, 0) ||
      !o.integer("aStride", &aStride, 0, true, cols) || !o.integer("outStride", &outStride, 0, true, cols) ||
      !o.typed("a", napi_float32_array, "Float32Array", &a, &aLen) || !o.matrix("a", aLen, rows, cols, aStride) ||
      !o.matrix("outStride", rows * outStride, rows, cols, outStride) || !o.kernelEnv(&ke)) {
    return env.Undefined();
  }
  Napi::Float32Array out;
  if (!newOutput(env, rows * outStride, &out)) return env.Undefined();
  if (!run(o, ke, a, aStride, rows, cols, out.Data(), outStride)) return env.Undefined();
  return out;
}

// 'none' (default) or 'tanh'.
bool approximate(Options& o, bool* tanh) {
  Napi::Value v = o.get("approximate");
  if (v.IsUndefined()) return *tanh = false, true;
  const std::string s = v.IsString() ? v.As<Napi::String>().Utf8Value() : std::string();
  if (s != "none" && s != "tanh") return o.range(o.where("approximate") + " must be 'none' or 'tanh'");
  *tanh = s == "tanh";
  return true;
}

Napi::Value Gelu(const Napi::CallbackInfo& info) {
  return Unary(info, "gelu", [](Options& o, const KernelEnv& ke, const float* a, int64_t as, int64_t rows,
                                int64_t cols, float* out, int64_t os) {
    bool tanh;
    if (!approximate(o, &tanh)) return false;
    kiln::geluKernel(ke, a, as, rows, cols, tanh, out, os);
    return true;
  });
}

Napi::Value Relu(const Napi::CallbackInfo& info) {
  return Unary(info, "relu", [](Options&, const KernelEnv& ke, const float* a, int64_t as, int64_t rows, int64_t cols,
                                float* out, int64_t os) {
    kiln::reluKernel(ke, a, as, rows, cols, out, os);
    return true;
  });
}

Napi::Value Softcap(const Napi::CallbackInfo& info) {
  return Unary(info, "softcap", [](Options& o, const KernelEnv& ke, const float* a, int64_t as, int64_t rows,
                                   int64_t cols, float* out, int64_t os) {
    float cap;
    if (!o.number("cap", &cap)) return false;
    if (!(cap > 0.0f)) return o.range(o.where("cap") + " must be > 0");
    kiln::softcapKernel(ke, a, as, rows, cols, cap, out, os);
    return true;
  });
}

Napi::Value Geglu(const Napi::CallbackInfo& info) {
  Options o(info, "geglu");
  Napi::Env env = info.Env();
  float *g, *u;
  int64_t gLen, uLen, rows, cols, gStride, uStride, outStride;
  bool tanh;
  KernelEnv ke;
  if (!o.ok() || !o.integer("rows", &rows, 0) || !o.integer("cols", &cols, 0) ||
      !o.integer("gateStride", &gStride, 0, true, cols) || !o.integer("upStride", &uStride, 0, true, cols) ||
      !o.integer("outStride", &outStride, 0, true, cols) ||
      !o.typed("gate", napi_float32_array, "Float32Array", &g, &gLen) || !o.matrix("gate", gLen, rows, cols, gStride) ||
      !o.typed("up", napi_float32_array, "Float32Array", &u, &uLen) || !o.matrix("up", uLen, rows, cols, uStride) ||
      !o.matrix("outStride", rows * outStride, rows, cols, outStride) || !approximate(o, &tanh) ||
      !o.kernelEnv(&ke)) {
    return env.Undefined();
  }
  Napi::Float32Array out;
  if (!newOutput(env, rows * outStride, &out)) return env.Undefined();
  kiln::gegluKernel(ke, g, gStride, u, uStride, rows, cols, tanh, out.Data(), outStride);
  return out;
}

Napi::Value PositionEmbedding(const Napi::CallbackInfo& info) {
  Options o(info, "positionEmbedding");
  Napi::Env env = info.Env();
  int32_t* positions;
  int64_t numTokens, hidden, outStride, tableLen, offset;
  const void* table;
  DType dt;
  KernelEnv ke;
  if (!o.ok() || !o.typed("positions", napi_int32_array, "Int32Array", &positions, &numTokens) ||
      !o.weights("table", "tableDtype", &table, &dt, &tableLen) || !o.integer("hidden", &hidden, 1) ||
      !o.integer("offset", &offset, 0, true, 0) || !o.integer("outStride", &outStride, hidden, true, hidden) ||
      !o.kernelEnv(&ke)) {
    return env.Undefined();
  }
  if (tableLen % hidden != 0) return o.range(o.where("table") + " length is not a multiple of hidden"), env.Undefined();
  Napi::Float32Array out;
  if (!newOutput(env, numTokens * outStride, &out)) return env.Undefined();
  // The kernel's own bound check is what is under test here, so positions are passed through unchecked.
  const int64_t bad = kiln::positionEmbeddingKernel(ke, positions, numTokens, offset, table, dt, tableLen / hidden,
                                                    hidden, out.Data(), outStride);
  if (bad >= 0) {
    o.range(o.where("positions") + "[" + std::to_string(bad) + "] = " + std::to_string(positions[bad]) +
            " plus offset " + std::to_string(offset) + " is outside the table of " +
            std::to_string(tableLen / hidden) + " rows");
    return env.Undefined();
  }
  return out;
}

Napi::Value Moe(const Napi::CallbackInfo& info) {
  Options o(info, "moe");
  Napi::Env env = info.Env();
  float* x;
  int64_t xLen, rows, H, I, E, topK, xStride, outStride, routerLen, gateLen, upLen, downLen;
  const void *router, *gate, *up, *down;
  DType routerDt, gateDt, upDt, downDt;
  bool normalize;
  KernelEnv ke;
  if (!o.ok() || !o.integer("rows", &rows, 0) || !o.integer("H", &H, 1) || !o.integer("I", &I, 1) ||
      !o.integer("numExperts", &E, 1) || !o.integer("topK", &topK, 1) ||
      !o.integer("xStride", &xStride, 0, true, H) || !o.integer("outStride", &outStride, 0, true, H) ||
      !o.typed("x", napi_float32_array, "Float32Array", &x, &xLen) || !o.matrix("x", xLen, rows, H, xStride) ||
      !o.weights("router", "routerDtype", &router, &routerDt, &routerLen) ||
      !o.exactLength("router", routerLen, E * H) || !o.weights("gate", "expertDtype", &gate, &gateDt, &gateLen) ||
      !o.exactLength("gate", gateLen, E * I * H) || !o.weights("up", "expertDtype", &up, &upDt, &upLen) ||
      !o.exactLength("up", upLen, E * I * H) || !o.weights("down", "expertDtype", &down, &downDt, &downLen) ||
      !o.exactLength("down", downLen, E * H * I) || !o.boolean("normalizeTopK", &normalize, false) ||
      !o.matrix("outStride", rows * outStride, rows, H, outStride) || !o.kernelEnv(&ke)) {
    return env.Undefined();
  }
  if (topK > E) return o.range(o.where("topK") + " must be at most numExperts"), env.Undefined();
  if (static_cast<double>(E) * I * H > static_cast<double>(kMaxDim)) {
    return o.range(o.where("numExperts") + ": the experts are too large"), env.Undefined();
  }
  Napi::Float32Array out;
  if (!newOutput(env, rows * outStride, &out)) return env.Undefined();
  kiln::moeKernel(ke, x, rows, xStride, router, routerDt, gate, up, down, gateDt, E, H, I, topK, normalize, out.Data(),
                  outStride);
  return out;
}

Napi::Value GatherRows(const Napi::CallbackInfo& info) {
  Options o(info, "gatherRows");
  Napi::Env env = info.Env();
  float* x;
  int32_t* rows;
  int64_t xLen, numRows, cols, xStride, outStride;
  KernelEnv ke;
  if (!o.ok() || !o.integer("cols", &cols, 0) || !o.integer("xStride", &xStride, 0, true, cols) ||
      !o.integer("outStride", &outStride, 0, true, cols) ||
      !o.typed("x", napi_float32_array, "Float32Array", &x, &xLen) ||
      !o.typed("rows", napi_int32_array, "Int32Array", &rows, &numRows) ||
      !o.matrix("outStride", numRows * outStride, numRows, cols, outStride) || !o.kernelEnv(&ke)) {
    return env.Undefined();
  }
  if (xStride < cols) return o.range(o.where("xStride") + " is less than cols"), env.Undefined();
  for (int64_t i = 0; i < numRows; ++i) {
    if (rows[i] < 0 || static_cast<int64_t>(rows[i]) * xStride + cols > xLen) {
      o.range(o.where("rows") + "[" + std::to_string(i) + "] = " + std::to_string(rows[i]) + " is outside x");
      return env.Undefined();
    }
  }
  Napi::Float32Array out;
  if (!newOutput(env, numRows * outStride, &out)) return env.Undefined();
  kiln::gatherRowsKernel(ke, x, xStride, rows, numRows, cols, out.Data(), outStride);
  return out;
}

}  // namespace

void InitTesting(Napi::Env env, Napi::Object exports) {
  Napi::Object t = Napi::Object::New(env);
  t.Set("cpuIsa", Napi::Function::New(env, CpuIsa, "cpuIsa"));
  t.Set("f32ToBf16", Napi::Function::New(env, F32ToBf16, "f32ToBf16"));
  t.Set("f32ToF16", Napi::Function::New(env, F32ToF16, "f32ToF16"));
  t.Set("bf16ToF32", Napi::Function::New(env, Bf16ToF32, "bf16ToF32"));
  t.Set("f16ToF32", Napi::Function::New(env, F16ToF32, "f16ToF32"));
  t.Set("embedding", Napi::Function::New(env, Embedding, "embedding"));
  t.Set("linear", Napi::Function::New(env, Linear, "linear"));
  t.Set("linearInt4", Napi::Function::New(env, LinearInt4, "linearInt4"));
  t.Set("rmsNorm", Napi::Function::New(env, RmsNorm, "rmsNorm"));
  t.Set("add", Napi::Function::New(env, Add, "add"));
  t.Set("mul", Napi::Function::New(env, Mul, "mul"));
  t.Set("silu", Napi::Function::New(env, Silu, "silu"));
  t.Set("swiglu", Napi::Function::New(env, Swiglu, "swiglu"));
  t.Set("rope", Napi::Function::New(env, Rope, "rope"));
  t.Set("attention", Napi::Function::New(env, Attention, "attention"));
  t.Set("gatherRows", Napi::Function::New(env, GatherRows, "gatherRows"));
  t.Set("layerNorm", Napi::Function::New(env, LayerNorm, "layerNorm"));
  t.Set("gelu", Napi::Function::New(env, Gelu, "gelu"));
  t.Set("geglu", Napi::Function::New(env, Geglu, "geglu"));
  t.Set("relu", Napi::Function::New(env, Relu, "relu"));
  t.Set("softcap", Napi::Function::New(env, Softcap, "softcap"));
  t.Set("positionEmbedding", Napi::Function::New(env, PositionEmbedding, "positionEmbedding"));
  t.Set("moe", Napi::Function::New(env, Moe, "moe"));
  exports.Set("testing", t);
}
