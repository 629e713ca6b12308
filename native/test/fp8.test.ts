// FP8 e4m3 linears on the CPU (decision 0015, native/src/kiln/fp8.h): the reference the cuda kernels are
// checked against, so it is checked here against an independent TypeScript model of the format: e4m3
// values enumerated from their definition (float64 arithmetic, no bit tricks shared with the C++), round
// to nearest with ties to the even code, saturation at +-448; per-row activation scales from the row's
// largest magnitude; products summed in float64. Only the kernel's float32 summation order may differ.
import { loadNative, type KernelIsa, type NativeTesting } from '@kiln/native';
import { rng, randomArray, expectError, kernelIsas } from './test-utils';

const testing: NativeTesting = loadNative().testing;
const ISAS: KernelIsa[] = kernelIsas(testing.cpuIsa());
const F32 = Math.fround;
const MAX = 448;
const MIN_AMAX = F32(1e-30);

// The 256 codes' values: sign, 4 exponent bits (bias 7), 3 mantissa bits; 0x7f / 0xff are NaN.
function valueOf(code: number): number {
  const sign = code & 0x80 ? -1 : 1;
  const e = (code >> 3) & 15;
  const m = code & 7;
  if ((code & 0x7f) === 0x7f) return NaN;
  return sign * (e === 0 ? (m / 8) * 2 ** -6 : (1 + m / 8) * 2 ** (e - 7));
}
// Non-negative finite codes 0x00..0x7e in increasing order of value.
const POSITIVE = Array.from({ length: 0x7f }, (_, c) => valueOf(c));

/** The e4m3 code nearest to v (ties to the even code), saturated to +-448; NaN to 0x7f with v's sign. */
function encode(v: number): number {
  const sign = v < 0 || Object.is(v, -0) ? 0x80 : 0;
  const a = Math.abs(v);
  if (Number.isNaN(v)) return sign | 0x7f;
  if (a >= MAX) return sign | 0x7e;
  let lo = 0;
  while (lo + 1 < POSITIVE.length && POSITIVE[lo + 1] <= a) lo++;
  if (POSITIVE[lo] === a || lo + 1 === POSITIVE.length) return sign | lo;
  const dLo = a - POSITIVE[lo];
  const dHi = POSITIVE[lo + 1] - a;
  return sign | (dLo < dHi || (dLo === dHi && lo % 2 === 0) ? lo : lo + 1);
}

/** A row's e4m3 values and scale as the format defines them (float32 steps rounded with Math.fround). */
function quantizeRow(x: ArrayLike<number>, offset: number, K: number): { q: Float64Array; scale: number } {
  let amax = 0;
  for (let k = 0; k < K; k++) amax = Math.max(amax, Math.abs(x[offset + k]));
  const clamped = amax > MIN_AMAX ? amax : MIN_AMAX;
  const inv = F32(MAX / clamped);
  const q = new Float64Array(K);
  for (let k = 0; k < K; k++) q[k] = valueOf(encode(F32(x[offset + k] * inv)));
  return { q, scale: F32(clamped / MAX) };
}

function linear(x: Float32Array, rows: number, K: number, N: number, codes: Uint8Array, wScale: number, bias?: Float32Array,
                isa?: KernelIsa, threads = 1): Float32Array {
  return testing.linear({ x, rows, K, N, weight: codes, weightDtype: 'float8_e4m3fn', scales: Float32Array.of(wScale), bias, isa, threads });
}

describe('FP8 e4m3 linear (cpu reference kernel)', () => {
  test('codes every e4m3 value exactly, rounds halfway cases to the even code, saturates at 448', () => {
    // y = e4m3(v) when the row is [v, 448]: amax 448 makes the multiplier 1, and the weight row is [1, 0].
    const probes: number[] = [];
    for (let c = 0; c < 0x7f; c++) {
      probes.push(valueOf(c), -valueOf(c));
      if (c + 1 < 0x7f) probes.push((valueOf(c) + valueOf(c + 1)) / 2, -(valueOf(c) + valueOf(c + 1)) / 2);
    }
    const random = rng(5);
    for (let i = 0; i < 200; i++) probes.push(F32((random() * 2 - 1) * 2 ** Math.floor(random() * 18 - 10)));
    probes.push(2 ** -10, 2 ** -10 * 3, 447.9, -447);
    const x = new Float32Array(probes.length * 2);
    probes.forEach((v, r) => {
      x[2 * r] = v;
      x[2 * r + 1] = MAX;
    });
    const codes = Uint8Array.of(0x38, 0x00); // 1.0, 0
    const y = linear(x, probes.length, 2, 1, codes, 1);
    const bad: string[] = [];
    probes.forEach((v, r) => {
      const want = valueOf(encode(F32(v)));
      if (!Object.is(y[r], want) && !(y[r] === 0 && want === 0) && bad.length < 5) bad.push(`${v} -> ${y[r]}, want ${want}`);
    });
    expect(bad).toEqual([]);
    expect(valueOf(0x38)).toBe(1);
    expect(valueOf(0x7e)).toBe(448);
    expect(valueOf(0x01)).toBe(2 ** -9);
    // A loud row: its largest element maps to -448 exactly, the other to the e4m3 value nearest 149.3
    // (144). A row far below kFp8MinAmax keeps a finite multiplier and quantizes to zeros.
    const loud = Float32Array.of(1e6, -3e6, 1e-38, -1e-38);
    const sat = linear(loud, 2, 2, 1, codes, 1);
    const row0 = quantizeRow(loud, 0, 2);
    expect(Array.from(row0.q)).toEqual([144, -448]);
    expect(sat[0]).toBe(F32(144 * row0.scale));
    expect(sat[1]).toBe(0);
  });

  for (const isa of ISAS) {
    for (const c of [
      ...[1, 2, 3, 5, 9].map((rows) => ({ rows, K: 48, N: 29, threads: 1 })),
      { rows: 1, K: 512, N: 70, threads: 2 },
      { rows: 67, K: 96, N: 101, threads: 2 },
    ]) {
      test(`${isa} rows=${c.rows} K=${c.K} N=${c.N} threads=${c.threads}: per-row activation scales against a float64 reference`, () => {
        const seed = 3 + c.rows * 1000 + c.K * 7 + c.N;
        // Rows of very different magnitudes (and one of zeros) so that a shared scale would show.
        const x = randomArray(c.rows * c.K, seed, -1, 1);
        for (let r = 0; r < c.rows; r++) {
          const m = r === 1 ? 0 : 10 ** ((r % 5) - 2);
          for (let k = 0; k < c.K; k++) x[r * c.K + k] *= m;
        }
        const random = rng(seed + 1);
        const codes = Uint8Array.from({ length: c.N * c.K }, () => {
          const code = Math.floor(random() * 256);
          return (code & 0x7f) === 0x7f ? code - 1 : code; // no NaN codes
        });
        const wScale = F32(0.0123);
        const bias = randomArray(c.N, seed + 2);
        const y = linear(x, c.rows, c.K, c.N, codes, wScale, bias, isa, c.threads);
        for (let r = 0; r < c.rows; r++) {
          const { q, scale } = quantizeRow(x, r * c.K, c.K);
          const outScale = F32(scale * wScale);
          for (let n = 0; n < c.N; n++) {
            let s = 0;
            let mag = 0;
            for (let k = 0; k < c.K; k++) {
              const p = q[k] * valueOf(codes[n * c.K + k]);
              s += p;
              mag += Math.abs(p);
            }
            const want = s * outScale + bias[n];
            const tol = 1e-5 * (mag * outScale + Math.abs(bias[n])) + 1e-30;
            if (!(Math.abs(y[r * c.N + n] - want) <= tol)) {
              throw new Error(`[${r}, ${n}] got ${y[r * c.N + n]} want ${want} (tol ${tol})`);
            }
          }
        }
      });
    }
  }

  test("a row's result does not depend on the rows batched with it", () => {
    const K = 64, N = 33;
    const x = randomArray(4 * K, 77, -2, 2);
    for (let k = 0; k < K; k++) x[2 * K + k] *= 1000; // a loud batch mate
    const random = rng(78);
    const codes = Uint8Array.from({ length: N * K }, () => Math.floor(random() * 0x7e));
    const all = linear(x, 4, K, N, codes, 0.5);
    for (let r = 0; r < 4; r++) {
      const alone = linear(x.slice(r * K, (r + 1) * K), 1, K, N, codes, 0.5);
      expect(Array.from(all.slice(r * N, (r + 1) * N))).toEqual(Array.from(alone));
    }
  });

  test('float8_e4m3fn weights need exactly one scale, as Uint8Array codes', () => {
    const x = new Float32Array(6);
    expectError(() => testing.linear({ x, rows: 2, K: 3, N: 2, weight: new Uint8Array(6), weightDtype: 'float8_e4m3fn' }), 'TypeError');
    expectError(() => testing.linear({ x, rows: 2, K: 3, N: 2, weight: new Uint8Array(6), weightDtype: 'float8_e4m3fn', scales: new Float32Array(2) }), 'RangeError');
    expectError(() => testing.linear({ x, rows: 2, K: 3, N: 2, weight: new Int8Array(6), weightDtype: 'float8_e4m3fn', scales: new Float32Array(1) }), 'TypeError');
  });
});
