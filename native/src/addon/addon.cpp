#include <napi.h>
void InitFiles(Napi::Env, Napi::Object);
void InitEngine(Napi::Env env, Napi::Object exports);
void InitTesting(Napi::Env, Napi::Object);
void InitSamplingTesting(Napi::Env, Napi::Object);
Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("version", Napi::String::New(env, "0.1.0"));
  InitEngine(env, exports);
  InitTesting(env, exports);
  InitSamplingTesting(env, exports);
  InitFiles(env, exports);
  return exports;
}
NODE_API_MODULE(kiln, Init)
