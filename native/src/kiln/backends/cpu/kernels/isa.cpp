#include <cstdlib>
#include <cstring>

#include "kiln/backends/cpu/kernels/kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace kiln {

namespace {

#if defined(__x86_64__) || defined(__i386__)
// XCR0: which register states the OS saves on a context switch. AVX-512 needs the opmask and both halves
// of the zmm file (bits 5-7) besides SSE and AVX (bits 1-2); a CPU can have the instructions while the OS
// has them off. Read with the raw opcode so this file needs no -mxsave.
uint64_t xcr0() {
  uint32_t lo = 0, hi = 0;
  __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}
#endif

Isa detectIsaUncached() {
#if defined(__x86_64__) || defined(__i386__)
  // CPUID directly rather than __builtin_cpu_supports: clang 14 (the fuzzing builds compile this file
  // too) knows neither "f16c" nor "avx512bf16".
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return Isa::Generic;
  const bool fma = (ecx & (1u << 12)) != 0;
  const bool osxsave = (ecx & (1u << 27)) != 0;
  const bool f16c = (ecx & (1u << 29)) != 0;
  if (!osxsave) return Isa::Generic;
  const uint64_t xcr = xcr0();
  if ((xcr & 0x6) != 0x6) return Isa::Generic;  // AVX state not enabled by the OS
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return Isa::Generic;
  const bool avx2 = (ebx & (1u << 5)) != 0;
  // The *_avx2.cpp kernels use AVX2 integer ops, FMA and F16C (half -> float); all three must be there.
  if (!(avx2 && fma && f16c)) return Isa::Generic;
  const bool avx512f = (ebx & (1u << 16)) != 0, avx512dq = (ebx & (1u << 17)) != 0;
  const bool avx512bw = (ebx & (1u << 30)) != 0, avx512vl = (ebx & (1u << 31)) != 0;
  const bool vnni = (ecx & (1u << 11)) != 0;
  if (!(avx512f && avx512dq && avx512bw && avx512vl) || (xcr & 0xe0) != 0xe0) return Isa::Avx2;
  unsigned eax1 = 0, ebx1 = 0, ecx1 = 0, edx1 = 0;
  const bool bf16 = __get_cpuid_count(7, 1, &eax1, &ebx1, &ecx1, &edx1) && (eax1 & (1u << 5)) != 0;
  // Every CPU with AVX512_BF16 so far (Cooper Lake, Sapphire Rapids, Zen 4) also has AVX512_VNNI; the
  // top set uses both. A VNNI-only CPU (Cascade Lake, Ice Lake) runs the plain AVX-512 set.
  return bf16 && vnni ? Isa::Avx512Bf16 : Isa::Avx512;
#else
  return Isa::Generic;
#endif
}

}  // namespace

Isa detectIsa() {
  static const Isa isa = detectIsaUncached();
  return isa;
}

const char* isaName(Isa isa) {
  switch (isa) {
    case Isa::Generic: return "generic";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    case Isa::Avx512Bf16: return "avx512_bf16";
  }
  return "generic";
}

bool parseIsa(const char* name, Isa* out) {
  for (Isa isa : {Isa::Generic, Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16}) {
    if (std::strcmp(name, isaName(isa)) == 0) {
      *out = isa;
      return true;
    }
  }
  return false;
}

}  // namespace kiln
