// The q8_0 linear kernel (native/src/kiln/backends/cpu/kernels/linear_q8_0.cpp: llama.cpp's CPU semantics
// for Q8_0 / Q4_0 matrices, decision 0016) against a reference written here from ggml's description:
// each input row quantized to blocks of 32 (d = max|x| / 127 rounded to float16, codes round-half-even
// of x * (127 / max|x|)), integer dot products per block, scaled by d_w * d_x and summed over the blocks
// in order in float32. Integer sums are exact and the float steps are replayed with Math.fround, so every
// kernel set must give exactly the reference's bits.
import { loadNative, type KernelIsa, type NativeTesting } from '@kiln/native';
import { rng, randomArray, expectError, kernelIsas } from './test-utils';

const testing: NativeTesting = loadNative().testing;
const ISAS: KernelIsa[] = kernelIsas(testing.cpuIsa());

function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** v rounded to float16 (nearest even; subnormals below 2^-14; no overflow in these tests). */
function f16Value(v: number): number {
  if (v === 0) return 0;
  const a = Math.abs(v);
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  const ulp = 2 ** (Math.max(e, -14) - 10);
  return Math.sign(v) * roundHalfEven(a / ulp) * ulp;
}

/** The bits of a float16-representable positive normal value. */
function f16Bits(v: number): number {
  const e = Math.floor(Math.log2(v));
  return ((e + 15) << 10) | Math.round((v / 2 ** e - 1) * 1024);
}

/** Random Q8_0 blocks for [N, K]: float16 scales in [lo, hi), codes in [codeLo, codeHi]. */
function makeBlocks(N: number, K: number, seed: number, codeLo = -128, codeHi = 127): { bytes: Uint8Array; d: number[]; q: Int8Array } {
  const r = rng(seed);
  const blocks = (N * K) / 32;
  const bytes = new Uint8Array(blocks * 34);
  const d: number[] = [];
  const q = new Int8Array(N * K);
  for (let b = 0; b < blocks; b++) {
    const scale = f16Value(0.001 + 0.05 * r());
    d.push(scale);
    const bits = f16Bits(scale);
    bytes[b * 34] = bits & 0xff;
    bytes[b * 34 + 1] = bits >> 8;
    for (let j = 0; j < 32; j++) {
      const code = codeLo + Math.floor(r() * (codeHi - codeLo + 1));
      q[b * 32 + j] = code;
      bytes[b * 34 + 2 + j] = code & 0xff;
    }
  }
  return { bytes, d, q };
}

function reference(x: Float32Array, rows: number, K: number, xStride: number, w: { d: number[]; q: Int8Array }, N: number, bias: Float32Array | undefined, yStride: number): Float32Array {
  const y = new Float32Array(rows * yStride);
  const blocks = K / 32;
  for (let r = 0; r < rows; r++) {
    const codes = new Int8Array(K);
    const dx: number[] = [];
    for (let b = 0; b < blocks; b++) {
      let amax = 0;
      for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[r * xStride + b * 32 + j]));
      dx.push(f16Value(Math.fround(amax / 127)));
      const id = amax !== 0 ? Math.fround(127 / amax) : 0;
      for (let j = 0; j < 32; j++) codes[b * 32 + j] = roundHalfEven(Math.fround(x[r * xStride + b * 32 + j] * id));
    }
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let b = 0; b < blocks; b++) {
        let sumi = 0;
        for (let j = 0; j < 32; j++) sumi += w.q[n * K + b * 32 + j] * codes[b * 32 + j];
        s = Math.fround(s + Math.fround(Math.fround(w.d[n * blocks + b] * dx[b]) * sumi));
      }
      y[r * yStride + n] = Math.fround(s + (bias ? bias[n] : 0));
    }
  }
  return y;
}

describe('linear over q8_0 blocks', () => {
  for (const isa of ISAS) {
    for (const c of [
      ...[1, 2, 3, 5, 9].map((rows) => ({ rows, K: 96, N: 29, xStride: 100, yStride: 31, threads: 1, q4: false })),
      { rows: 1, K: 32, N: 17, xStride: 32, yStride: 17, threads: 1, q4: true },
      { rows: 70, K: 160, N: 101, xStride: 163, yStride: 103, threads: 2, q4: false },
      { rows: 1, K: 2048, N: 67, xStride: 2048, yStride: 67, threads: 2, q4: true },
    ]) {
      test(`${isa} rows=${c.rows} K=${c.K} N=${c.N} threads=${c.threads}${c.q4 ? ' (Q4_0 codes)' : ''} equals the reference bit for bit`, () => {
        const seed = 31 + c.rows * 1000 + c.K * 7 + c.N;
        const x = randomArray(c.rows * c.xStride, seed, -3, 3);
        // A block of zeros (d = 0), a block with one large value, and halves to round to even.
        for (let j = 0; j < Math.min(32, c.K); j++) x[j] = 0;
        if (c.rows > 1 && c.K >= 64) {
          x[c.xStride + 32] = 1e4;
          for (let j = 0; j < 32; j++) x[c.xStride + j] = j === 0 ? 127 : j % 2 === 0 ? j + 0.5 : -(j + 0.5);
        }
        const w = c.q4 ? makeBlocks(c.N, c.K, seed + 1, -8, 7) : makeBlocks(c.N, c.K, seed + 1);
        const bias = randomArray(c.N, seed + 2);
        const y = testing.linear({
          x, rows: c.rows, K: c.K, N: c.N, xStride: c.xStride, yStride: c.yStride,
          weight: w.bytes, weightDtype: 'q8_0', bias, isa, threads: c.threads,
        });
        expect(Array.from(y)).toEqual(Array.from(reference(x, c.rows, c.K, c.xStride, w, c.N, bias, c.yStride)));
      });
    }
  }

  test('is the float product up to the blocks quantization of the input', () => {
    const K = 256;
    const N = 8;
    const x = randomArray(K, 5, -2, 2);
    const w = makeBlocks(N, K, 6);
    const y = testing.linear({ x, rows: 1, K, N, weight: w.bytes, weightDtype: 'q8_0' });
    for (let n = 0; n < N; n++) {
      let exact = 0;
      let scale = 0;
      for (let k = 0; k < K; k++) {
        const wv = w.d[n * (K / 32) + Math.floor(k / 32)] * w.q[n * K + k];
        exact += wv * x[k];
        scale += Math.abs(wv * x[k]);
      }
      // Each input is off by at most half a step (max|x| / 254 of its block): ~0.4% of |x|.
      expect(Math.abs(y[n] - exact)).toBeLessThan(0.005 * scale);
    }
  });

  test('refuses inputs that are not whole blocks and blocks of the wrong size', () => {
    const x = new Float32Array(2 * 40);
    expectError(() => testing.linear({ x, rows: 2, K: 40, N: 1, weight: new Uint8Array(34 + 17), weightDtype: 'q8_0' }), 'RangeError');
    expectError(() => testing.linear({ x, rows: 1, K: 32, N: 2, weight: new Uint8Array(34), weightDtype: 'q8_0' }), 'RangeError');
    expectError(() => testing.linear({ x, rows: 1, K: 32, N: 1, weight: new Int8Array(34) as never, weightDtype: 'q8_0' }), 'TypeError');
  });
});
