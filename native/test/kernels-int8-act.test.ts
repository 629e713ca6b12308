// int8 weights times activations quantized to int8 (linear_int8_act*.cpp, decision 0017) against a scalar
// reference written here from the kernel's contract: each row of x gets s1 = max|x| / 127 and codes
// q1 = round-half-even(x * (127 / max|x|)); with two passes ('int8x2') also s2 = s1 / 254 and codes
// q2 = round-half-even((x - s1 q1) / s2) clamped to +-127, every float step replayed with Math.fround; the
// integer dot products with the weight codes are exact; y = (float(sum1) s1 (+ float(sum2) s2)) s_w + bias.
// Only the last few float32 roundings may differ (an FMA may fuse them), so the bound below is 1e-6 of the
// output's magnitude: far inside the 1e-4, and tight enough that a single lost or doubled product
// of the first pass (at least 1/127^2 of a full-scale sum, usually far more) fails it. Shapes are odd on purpose: K not a multiple of
// the 64-byte step (masked tails), N not a multiple of the 6/8/12-feature groups, rows covering the 4-, 3-,
// 2- and 1-row tiles and more than one 64-row block.
import { loadNative, type KernelIsa, type NativeTesting } from '@kiln/native';
import { rng, randomArray, kernelIsas } from './test-utils';

const testing: NativeTesting = loadNative().testing;
const ISAS: KernelIsa[] = kernelIsas(testing.cpuIsa());

function roundHalfEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

interface Case { rows: number; K: number; N: number; xStride: number; yStride: number; threads: number; bias: boolean }

function makeCase(c: Case, seed: number, strongOutliers = false) {
  const x = randomArray(c.rows * c.xStride, seed, -3, 3);
  // An outlier per row, as real activations have: the row's scale follows it. With strongOutliers, the
  // odd rows' are 30 times larger, beyond 'adaptive''s crest limit (max|x| > 6 rms), and the even rows'
  // at most 10, inside it.
  const pick = rng(seed + 4);
  for (let r = 0; r < c.rows; r++) {
    const k = Math.floor(pick() * c.K);
    const sign = pick() < 0.5 ? -1 : 1;
    const u = pick();
    const size = !strongOutliers ? 5 + 20 * u : r % 2 === 1 ? (5 + 20 * u) * 30 : 5 + 5 * u;
    x[r * c.xStride + k] = sign * size;
  }
  const random = rng(seed + 1);
  const codes = Int8Array.from({ length: c.N * c.K }, () => Math.floor(random() * 255) - 127);
  const scales = randomArray(c.N, seed + 2, 0.001, 0.05);
  const bias = c.bias ? randomArray(c.N, seed + 3) : undefined;
  return { x, codes, scales, bias };
}

/** Which rows 'adaptive' gives a second pass: max|x| > 6 rms(x) (kInt8ActCrestLimit), the sum of squares in double. */
function crestRows(c: Case, x: Float32Array): boolean[] {
  const rows: boolean[] = [];
  for (let r = 0; r < c.rows; r++) {
    let amax = 0;
    let sq = 0;
    for (let k = 0; k < c.K; k++) {
      const v = x[r * c.xStride + k];
      amax = Math.max(amax, Math.abs(v));
      sq += v * v;
    }
    rows.push(amax * amax * c.K > 36 * sq);
  }
  return rows;
}

/**
 * The maths in scalar form: want, and the bound for each output (0 between rows of y). passes 'adaptive':
 * two for the rows crestRows picks, one for the others.
 */
function reference(c: Case, x: Float32Array, codes: Int8Array, scales: Float32Array, bias: Float32Array | undefined, mode: 1 | 2 | 'adaptive') {
  const want = new Float64Array(c.rows * c.yStride);
  const tol = new Float64Array(c.rows * c.yStride);
  const second = crestRows(c, x);
  for (let r = 0; r < c.rows; r++) {
    const passes = mode === 'adaptive' ? (second[r] ? 2 : 1) : mode;
    let amax = 0;
    for (let k = 0; k < c.K; k++) amax = Math.max(amax, Math.abs(x[r * c.xStride + k]));
    const s1 = Math.fround(amax / 127);
    const id = amax !== 0 ? Math.fround(127 / amax) : 0;
    const q1 = new Int32Array(c.K);
    for (let k = 0; k < c.K; k++) q1[k] = roundHalfEven(Math.fround(x[r * c.xStride + k] * id));
    const s2 = Math.fround(s1 / 254);
    const id2 = s2 !== 0 ? Math.fround(1 / s2) : 0;
    const q2 = new Int32Array(c.K);
    for (let k = 0; k < c.K; k++) {
      const e = Math.fround(x[r * c.xStride + k] - Math.fround(s1 * q1[k]));
      q2[k] = Math.min(127, Math.max(-127, roundHalfEven(Math.fround(e * id2))));
    }
    for (let n = 0; n < c.N; n++) {
      let sum1 = 0;
      let sum2 = 0;
      for (let k = 0; k < c.K; k++) {
        sum1 += q1[k] * codes[n * c.K + k];
        sum2 += q2[k] * codes[n * c.K + k];
      }
      let acc = Math.fround(Math.fround(sum1) * s1);
      let mag = Math.abs(acc);
      if (passes === 2) {
        const t = Math.fround(Math.fround(sum2) * s2);
        acc = Math.fround(acc + t);
        mag += Math.abs(t);
      }
      const prod = Math.fround(acc * scales[n]);
      const b = bias ? bias[n] : 0;
      want[r * c.yStride + n] = Math.fround(prod + b);
      tol[r * c.yStride + n] = 1e-6 * (mag * scales[n] + Math.abs(b)) + 1e-30;
    }
  }
  return { want, tol };
}

function expectClose(actual: Float32Array, want: Float64Array, tol: Float64Array, what: string): void {
  expect(actual.length).toBe(want.length);
  const bad: string[] = [];
  for (let i = 0; i < want.length; i++) {
    if (!(Math.abs(actual[i] - want[i]) <= tol[i]) && bad.length < 5) bad.push(`[${i}] got ${actual[i]} want ${want[i]} (tol ${tol[i]})`);
  }
  if (bad.length) throw new Error(`${what}: ${bad.join('; ')}`);
}

const CASES: Case[] = [
  ...[2, 3, 4, 5, 6, 7, 9].map((rows) => ({ rows, K: 77, N: 29, xStride: 80, yStride: 31, threads: 1, bias: true })),
  { rows: 2, K: 64, N: 50, xStride: 64, yStride: 50, threads: 1, bias: false },
  { rows: 70, K: 131, N: 101, xStride: 133, yStride: 103, threads: 2, bias: true },
  { rows: 13, K: 517, N: 389, xStride: 517, yStride: 389, threads: 2, bias: false },
  { rows: 3, K: 2053, N: 53, xStride: 2053, yStride: 53, threads: 1, bias: true },
];

describe('int8 linear with int8 activations', () => {
  for (const isa of ISAS) {
    // 'int8' and 'int8x2' force the quantized input on every set; 'auto' takes two passes where it is the
    // default (VNNI).
    const modes: Array<['int8' | 'int8x2' | 'adaptive' | 'auto', 1 | 2 | 'adaptive']> = [['int8', 1], ['int8x2', 2], ['adaptive', 'adaptive']];
    if (isa === 'avx512_bf16') modes.push(['auto', 2]);
    for (const [mode, passes] of modes) {
      for (const c of CASES) {
        test(`${isa} ${mode} rows=${c.rows} K=${c.K} N=${c.N} threads=${c.threads}`, () => {
          const seed = 17 + c.rows * 1000 + c.K * 7 + c.N;
          const { x, codes, scales, bias } = makeCase(c, seed, mode === 'adaptive');
          if (mode === 'adaptive') {
            // Both kinds of row are there.
            const second = crestRows(c, x).filter(Boolean).length;
            expect(second).toBeGreaterThan(0);
            expect(second).toBeLessThan(c.rows);
          }
          const y = testing.linear({
            x, rows: c.rows, K: c.K, N: c.N, xStride: c.xStride, yStride: c.yStride,
            weight: codes, weightDtype: 'int8', scales, bias, isa, threads: c.threads, int8Activations: mode,
          });
          const { want, tol } = reference(c, x, codes, scales, bias, passes);
          expectClose(y, want, tol, `${mode} linear`);
        });
      }
    }
  }

  test('the quantized input stays close to weight-only float maths, two passes much closer than one', () => {
    // Not a kernel check but the size of the approximation: against dequantize-then-multiply in float64,
    // the error of each output as a part of its magnitude sum_k |x w|.
    const c: Case = { rows: 16, K: 512, N: 64, xStride: 512, yStride: 64, threads: 1, bias: false };
    const { x, codes, scales } = makeCase(c, 99);
    const isa = ISAS[ISAS.length - 1];
    const worst = (mode: 'int8' | 'int8x2'): number => {
      const y = testing.linear({ x, rows: c.rows, K: c.K, N: c.N, weight: codes, weightDtype: 'int8', scales, isa, int8Activations: mode });
      let most = 0;
      for (let r = 0; r < c.rows; r++) {
        for (let n = 0; n < c.N; n++) {
          let s = 0;
          let mag = 0;
          for (let k = 0; k < c.K; k++) {
            const p = x[r * c.K + k] * codes[n * c.K + k] * scales[n];
            s += p;
            mag += Math.abs(p);
          }
          most = Math.max(most, Math.abs(y[r * c.N + n] - s) / mag);
        }
      }
      return most;
    };
    const one = worst('int8');
    const two = worst('int8x2');
    expect(one).toBeGreaterThan(0);  // an approximation: the inputs were rounded
    expect(one).toBeLessThan(0.02);
    expect(two).toBeLessThan(one / 50);  // the second pass adds about 8 bits
    process.stderr.write(`W8A8 relative error of outputs: one pass ${one.toExponential(2)}, two passes ${two.toExponential(2)}\n`);
  });

  test("'auto' keeps one row (decode) on the weight-only path, and is 'int8x2' for several rows on VNNI", () => {
    const c: Case = { rows: 5, K: 200, N: 37, xStride: 200, yStride: 37, threads: 1, bias: true };
    const { x, codes, scales, bias } = makeCase(c, 5);
    const isa = ISAS[ISAS.length - 1];
    const args = { K: c.K, N: c.N, weight: codes, weightDtype: 'int8' as const, scales, bias, isa };
    const one = x.subarray(0, c.K);
    expect(testing.linear({ ...args, x: one, rows: 1, int8Activations: 'auto' }))
      .toEqual(testing.linear({ ...args, x: one, rows: 1, int8Activations: 'float' }));
    const auto = testing.linear({ ...args, x, rows: c.rows, int8Activations: 'auto' });
    const want = testing.linear({ ...args, x, rows: c.rows, int8Activations: isa === 'avx512_bf16' ? 'int8x2' : 'float' });
    expect(auto).toEqual(want);
  });

  test('codes round half to even on every set (ties of x * 127 / max|x|, and of the second pass)', () => {
    // max|x| = 127 makes 127 / max|x| = 1, so x = j + 0.5 are ties of the first pass; the second pass then
    // sees errors of exactly +-0.5 = 127 steps of s2.
    const c: Case = { rows: 3, K: 70, N: 12, xStride: 70, yStride: 12, threads: 1, bias: false };
    const x = new Float32Array(c.rows * c.K);
    for (let i = 0; i < x.length; i++) x[i] = ((i * 7) % 51) - 25 + 0.5;
    for (let r = 0; r < c.rows; r++) x[r * c.K + 5] = 127;
    const random = rng(3);
    const codes = Int8Array.from({ length: c.N * c.K }, () => Math.floor(random() * 255) - 127);
    const scales = randomArray(c.N, 4, 0.001, 0.05);
    for (const isa of ISAS) {
      for (const [mode, passes] of [['int8', 1], ['int8x2', 2]] as const) {
        const y = testing.linear({ x, rows: c.rows, K: c.K, N: c.N, weight: codes, weightDtype: 'int8', scales, isa, int8Activations: mode });
        const { want, tol } = reference(c, x, codes, scales, undefined, passes);
        expectClose(y, want, tol, `${isa} ${mode} ties`);
      }
    }
  });

  test('a row holding NaN or infinity gives NaN outputs; the other rows are unaffected', () => {
    const c: Case = { rows: 4, K: 70, N: 9, xStride: 70, yStride: 9, threads: 1, bias: true };
    for (const isa of ISAS) {
      for (const [mode, passes] of [['int8', 1], ['int8x2', 2], ['adaptive', 'adaptive']] as const) {
        const { x, codes, scales, bias } = makeCase(c, 7, true);
        x[1 * c.K + 3] = NaN;
        x[2 * c.K + 69] = -Infinity;
        const y = testing.linear({ x, rows: c.rows, K: c.K, N: c.N, weight: codes, weightDtype: 'int8', scales, bias, isa, int8Activations: mode });
        const { want, tol } = reference(c, x, codes, scales, bias, passes);
        for (let n = 0; n < c.N; n++) {
          expect(Number.isNaN(y[1 * c.N + n])).toBe(true);
          expect(Number.isNaN(y[2 * c.N + n])).toBe(true);
          for (const r of [0, 3]) expect(Math.abs(y[r * c.N + n] - want[r * c.N + n])).toBeLessThanOrEqual(tol[r * c.N + n]);
        }
      }
    }
  });

  test('an unknown int8Activations mode is refused', () => {
    const w = new Int8Array(6);
    expect(() => testing.linear({
      x: new Float32Array(6), rows: 2, K: 3, N: 2, weight: w, weightDtype: 'int8', scales: new Float32Array(2),
      int8Activations: 'int4' as 'int8',
    })).toThrow(/int8Activations/);
  });
});
