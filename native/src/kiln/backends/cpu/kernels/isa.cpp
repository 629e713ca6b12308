#include "kiln/backends/cpu/kernels/kernels.h"

namespace kiln {

Isa detectIsa() {
#if defined(__x86_64__) || defined(__i386__)
  // The *_avx2.cpp kernels use AVX2 integer ops, FMA and F16C (half -> float); all three must be there.
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
    return Isa::Avx2;
  }
#endif
  return Isa::Generic;
}

const char* isaName(Isa isa) { return isa == Isa::Avx2 ? "avx2" : "generic"; }

}  // namespace kiln
