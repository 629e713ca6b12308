// Stands in for src/addon/testing.cpp and sampling_testing.cpp in builds without the test hooks
// (KILN_TESTING=OFF: the prebuilt packages and `kiln-build-native`), so the shipped kiln.node has no
// `testing` export. The repository's own build keeps them (the native tests call single kernels).
#include <napi.h>

void InitTesting(Napi::Env, Napi::Object) {}
void InitSamplingTesting(Napi::Env, Napi::Object) {}
