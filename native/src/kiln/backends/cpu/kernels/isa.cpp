#include "kiln/backends/cpu/kernels/kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace kiln {

Isa detectIsa() {
#if defined(__x86_64__) || defined(__i386__)
  // The *_avx2.cpp kernels use AVX2 integer ops, FMA and F16C (half -> float); all three must be there.
  __builtin_cpu_init();
  // F16C from CPUID leaf 1 (ECX bit 29): clang 14's __builtin_cpu_supports does not know "f16c", and
  // the clang builds (fuzzing) must compile this file too.
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 29)) != 0;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c) {
    return Isa::Avx2;
  }
#endif
  return Isa::Generic;
}

const char* isaName(Isa isa) { return isa == Isa::Avx2 ? "avx2" : "generic"; }

}  // namespace kiln
