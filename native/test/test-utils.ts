import type { KernelIsa } from '@kiln/native';
// Helpers shared by the native test suites.

/** Deterministic random numbers in [0, 1) (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** n uniform floats in [lo, hi), seeded. */
export function randomArray(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * r();
  return out;
}

/**
 * Expects a binding to throw an error of this name. Errors thrown by native code come from another
 * realm under Jest, so `toThrow(RangeError)` never matches them: the name is compared instead.
 */
export function expectError(fn: () => unknown, name: 'RangeError' | 'TypeError'): void {
  let thrown: unknown;
  try {
    fn();
  } catch (error) {
    thrown = error;
  }
  expect(thrown).toBeDefined();
  expect((thrown as Error).name).toBe(name);
  expect((thrown as Error).message).toMatch(/^testing\.\w+: '/);
}

/**
 * Every CPU kernel set this machine runs, from 'generic' up to what cpuIsa() reports, so each test runs
 * every path the CPU has (the CI machine has AVX-512 with BF16: all four).
 */
export function kernelIsas(cpuIsa: KernelIsa): KernelIsa[] {
  const ladder: KernelIsa[] = ['generic', 'avx2', 'avx512', 'avx512_bf16'];
  return ladder.slice(0, ladder.indexOf(cpuIsa) + 1);
}
