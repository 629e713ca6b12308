// Every CPU kernel against a scalar reference written here in plain loops (float64 accumulation), on
// both the portable and (where the CPU has it) the AVX2 path, for each weight dtype, with odd sizes so
// vector tails run, row strides wider than the rows, and several threads.
//
// Tolerances. float32 paths are compared with a float64 reference, so the error is the kernels' own
// float32 rounding. For a sum of n products computed in float32 (in any order, any blocking) the error
// is bounded by about n * 2^-24 * sum(|terms|); in practice it grows like sqrt(n). We allow
// 1e-5 * sum(|terms|) (plus the magnitude of any added bias), which is loose enough for every summation
// order used (8-lane partial sums, FMA, tails added last) and still ~1000x tighter than a wrong index
// or a dropped term would give. Elementwise results are within a few ulp (the AVX2 exp is a polynomial
// within ~2 ulp), so they get a relative 1e-5 too. 16-bit weights are decoded exactly to float32 (in the
// reference by an independent TS decoder), so they need no extra tolerance.
import { loadNative, type KernelIsa, type NativeTesting } from '@kiln/native';
import { rng, randomArray, expectError, kernelIsas } from './test-utils';

const testing: NativeTesting = loadNative().testing;
const ISAS: KernelIsa[] = kernelIsas(testing.cpuIsa());
const DTYPES = ['float32', 'float16', 'bfloat16'] as const;
type DType = (typeof DTYPES)[number];
const REL = 1e-5;

// ---------------------------------------------------------------------------------------------------
// Independent 16-bit float codecs: arithmetic on float64, no bit tricks shared with the C++ code.
interface HalfFormat {
  mantBits: number;
  bias: number;
  maxExpField: number;
}
const F16: HalfFormat = { mantBits: 10, bias: 15, maxExpField: 31 };
const BF16: HalfFormat = { mantBits: 7, bias: 127, maxExpField: 255 };

function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

function encodeHalf(v: number, fmt: HalfFormat): number {
  if (Number.isNaN(v)) return 0x7fff; // any NaN; compared by class
  const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0;
  const a = Math.abs(v);
  if (a === Infinity) return sign | (fmt.maxExpField << fmt.mantBits);
  const minNormalExp = 1 - fmt.bias;
  if (a < 2 ** minNormalExp) {
    // Subnormal (or zero): a multiple of 2^(minNormalExp - mantBits); reaching 1 << mantBits is the
    // smallest normal, which that same integer encodes.
    return sign | roundHalfEven(a / 2 ** (minNormalExp - fmt.mantBits));
  }
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  let q = roundHalfEven((a / 2 ** e - 1) * 2 ** fmt.mantBits);
  let field = e + fmt.bias;
  if (q === 2 ** fmt.mantBits) {
    q = 0;
    field++;
  }
  if (field >= fmt.maxExpField) return sign | (fmt.maxExpField << fmt.mantBits);
  return sign | (field << fmt.mantBits) | q;
}

function decodeHalf(bits: number, fmt: HalfFormat): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const field = (bits >> fmt.mantBits) & fmt.maxExpField;
  const m = bits & ((1 << fmt.mantBits) - 1);
  if (field === fmt.maxExpField) return m ? NaN : sign * Infinity;
  if (field === 0) return sign * m * 2 ** (1 - fmt.bias - fmt.mantBits);
  return sign * (1 + m / 2 ** fmt.mantBits) * 2 ** (field - fmt.bias);
}

function isHalfNaN(bits: number, fmt: HalfFormat): boolean {
  return ((bits >> fmt.mantBits) & fmt.maxExpField) === fmt.maxExpField && (bits & ((1 << fmt.mantBits) - 1)) !== 0;
}

/** Weights of a dtype: what the kernel gets, and the exact float32 values it must use. */
function makeWeights(values: Float32Array, dtype: DType): { data: Float32Array | Uint16Array; decoded: Float64Array } {
  if (dtype === 'float32') return { data: values, decoded: Float64Array.from(values) };
  const fmt = dtype === 'float16' ? F16 : BF16;
  const data = new Uint16Array(values.length);
  const decoded = new Float64Array(values.length);
  for (let i = 0; i < values.length; i++) {
    data[i] = encodeHalf(values[i], fmt);
    decoded[i] = decodeHalf(data[i], fmt);
  }
  return { data, decoded };
}

// ---------------------------------------------------------------------------------------------------
// Comparison: actual[i] within tol[i] of expected[i], and padding between strided rows left at zero.
function expectClose(actual: Float32Array, expected: ArrayLike<number>, tol: ArrayLike<number>, what: string): void {
  expect(actual.length).toBe(expected.length);
  const bad: string[] = [];
  for (let i = 0; i < expected.length; i++) {
    const e = expected[i];
    const ok = Number.isNaN(e) ? Number.isNaN(actual[i]) : Math.abs(actual[i] - e) <= tol[i];
    if (!ok && bad.length < 5) bad.push(`[${i}] got ${actual[i]} want ${e} (tol ${tol[i]})`);
  }
  if (bad.length) throw new Error(`${what}: ${bad.join('; ')}`);
}

/** Expected output buffer [rows, stride] with zeros between rows; tol 0 there. */
function strided(rows: number, cols: number, stride: number): { want: Float64Array; tol: Float64Array } {
  return { want: new Float64Array(rows * stride), tol: new Float64Array(rows * stride) };
}

function relTol(value: number, scale = Math.abs(value)): number {
  return REL * scale + 1e-30;
}

/**
 * Errors thrown by the addon are made in Node's own realm, not in Jest's sandbox, so `toThrow(RangeError)`
 * cannot match them by class: check the name (TypeError or RangeError) and that the message names the call.
 */
// ---------------------------------------------------------------------------------------------------
describe('dtype conversions', () => {
  const specials = [
    0, -0, 1, -1, 1.5, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 65504, 65519.99, 65520, 65536, 1e6,
    2 ** -14, 2 ** -14 - 2 ** -25, 2 ** -24, 2 ** -25, 1.5 * 2 ** -25, 3 * 2 ** -25, 5 * 2 ** -25, 1e-8, 1e-40, 2 ** -149,
    3.4028234663852886e38, 3.3961775292304e38, Infinity, -Infinity, NaN, -65520, -(2 ** -24),
  ];
  const randomBits = new Uint32Array(20000);
  {
    const r = rng(7);
    for (let i = 0; i < randomBits.length; i++) {
      // Half of them with exponents near float16's range, so its normals and subnormals are well covered.
      const bits = Math.floor(r() * 2 ** 32) >>> 0;
      randomBits[i] = i % 2 ? bits : ((bits & 0x807fffff) | ((100 + (bits % 50)) << 23)) >>> 0;
    }
  }
  const inputs = new Float32Array(specials.length + randomBits.length);
  inputs.set(specials);
  inputs.set(new Float32Array(randomBits.buffer), specials.length);

  for (const [name, fmt, encode] of [
    ['float16', F16, testing.f32ToF16],
    ['bfloat16', BF16, testing.f32ToBf16],
  ] as const) {
    test(`float32 -> ${name}: round to nearest even, inf, NaN, subnormals`, () => {
      const got = encode(inputs);
      for (let i = 0; i < inputs.length; i++) {
        const want = encodeHalf(inputs[i], fmt);
        if (Number.isNaN(inputs[i])) {
          expect(isHalfNaN(got[i], fmt)).toBe(true);
        } else if (got[i] !== want) {
          throw new Error(`${name}(${inputs[i]}): got 0x${got[i].toString(16)} want 0x${want.toString(16)}`);
        }
      }
    });

    test(`${name} -> float32 for all 65536 bit patterns`, () => {
      const bits = new Uint16Array(65536).map((_, i) => i);
      const got = name === 'float16' ? testing.f16ToF32(bits) : testing.bf16ToF32(bits);
      for (let i = 0; i < 65536; i++) {
        const want = decodeHalf(i, fmt);
        if (!(Number.isNaN(want) ? Number.isNaN(got[i]) : Object.is(got[i], want))) {
          throw new Error(`${name} 0x${i.toString(16)}: got ${got[i]} want ${want}`);
        }
      }
    });
  }

  test('known bit patterns', () => {
    const f = new Float32Array([1 + 2 ** -11, 1 + 3 * 2 ** -11, 65520, 2 ** -25, 3 * 2 ** -25, 2 ** -14 - 2 ** -25]);
    expect(Array.from(testing.f32ToF16(f))).toEqual([0x3c00, 0x3c02, 0x7c00, 0x0000, 0x0002, 0x0400]);
    expect(Array.from(testing.f32ToBf16(new Float32Array([1 + 2 ** -8, 1 + 3 * 2 ** -8, -2])))).toEqual([
      0x3f80, 0x3f82, 0xc000,
    ]);
  });
});

// ---------------------------------------------------------------------------------------------------
describe('linear', () => {
  function reference(x: Float32Array, rows: number, K: number, xStride: number, w: Float64Array, N: number,
                     bias: Float32Array | undefined, yStride: number) {
    const { want, tol } = strided(rows, N, yStride);
    for (let r = 0; r < rows; r++) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        let mag = 0;
        for (let k = 0; k < K; k++) {
          const p = x[r * xStride + k] * w[n * K + k];
          s += p;
          mag += Math.abs(p);
        }
        if (bias) {
          s += bias[n];
          mag += Math.abs(bias[n]);
        }
        want[r * yStride + n] = s;
        tol[r * yStride + n] = relTol(s, mag);
      }
    }
    return { want, tol };
  }

  const cases = [
    // rows 1..5 and 9 reach every row grouping of the AVX2 path (1, 2, 3, 4, 4+1, 4+4+1).
    ...[1, 2, 3, 4, 5, 9].map((rows) => ({ rows, K: 67, N: 13, xStride: 70, yStride: 15, bias: true, threads: 1 })),
    { rows: 3, K: 5, N: 9, xStride: 5, yStride: 9, bias: false, threads: 1 }, // K below one vector
    { rows: 2, K: 64, N: 48, xStride: 64, yStride: 50, bias: false, threads: 1 }, // no tails at all
    // Several feature blocks and two row blocks (64 rows each), split over threads.
    { rows: 70, K: 131, N: 101, xStride: 133, yStride: 103, bias: true, threads: 2 },
    { rows: 1, K: 517, N: 389, xStride: 517, yStride: 389, bias: true, threads: 3 },
    // K a multiple of 16 (AVX2) and of 32 (AVX-512): the one-row bfloat16 path (weights read in pairs),
    // alone and after 4 rows.
    ...[1, 5].map((rows) => ({ rows, K: 96, N: 37, xStride: 100, yStride: 40, bias: true, threads: 2 })),
    // AVX-512 row groups 4 x 6, 3 x 8, 2 x 12 over more features than one group, K with a 16-lane tail.
    ...[6, 7].map((rows) => ({ rows, K: 83, N: 50, xStride: 83, yStride: 50, bias: true, threads: 1 })),
  ];

  for (const isa of ISAS) {
    for (const dtype of DTYPES) {
      for (const c of cases) {
        test(`${isa} ${dtype} rows=${c.rows} K=${c.K} N=${c.N} threads=${c.threads}`, () => {
          const seed = c.rows * 1000 + c.K * 7 + c.N;
          const x = randomArray(c.rows * c.xStride, seed);
          const { data, decoded } = makeWeights(randomArray(c.N * c.K, seed + 1), dtype);
          const bias = c.bias ? randomArray(c.N, seed + 2) : undefined;
          const y = testing.linear({
            x, rows: c.rows, K: c.K, N: c.N, xStride: c.xStride, yStride: c.yStride,
            weight: data, weightDtype: dtype, bias, isa, threads: c.threads,
          });
          const { want, tol } = reference(x, c.rows, c.K, c.xStride, decoded, c.N, bias, c.yStride);
          expectClose(y, want, tol, 'linear');
        });
      }
    }
  }

  // bfloat16 engines' linears read x rounded to bfloat16 (round to nearest even; decision 0007): every
  // set must give the product of the rounded x, the AVX512_BF16 one through vdpbf16ps (32 pairs a step:
  // K = 77 has a masked tail of 13, K = 64 none).
  for (const isa of ISAS) {
    for (const c of [
      ...[1, 2, 3, 4, 7, 9].map((rows) => ({ rows, K: 77, N: 29, xStride: 80, yStride: 31, threads: 1 })),
      { rows: 70, K: 64, N: 101, xStride: 64, yStride: 101, threads: 2 },
      { rows: 1, K: 517, N: 389, xStride: 517, yStride: 389, threads: 2 },
      // decode ranges long enough for avx512bf16::decodeBf16's four streams (a quarter >= 64 rows), K with a tail
      { rows: 1, K: 200, N: 600, xStride: 200, yStride: 600, threads: 2 },
      { rows: 1, K: 77, N: 521, xStride: 80, yStride: 521, threads: 1 },
      // From 12 rows AVX512_BF16 runs the packed GEMM (64-feature panels, 256 inputs per K block): odd K
      // (the last pair half zero), rows 12 / 13 / 17 (6-row tiles and each remainder), a partial panel,
      // several panels and K blocks over two threads, and a K of exactly two blocks.
      ...[11, 12, 13, 17].map((rows) => ({ rows, K: 77, N: 29, xStride: 80, yStride: 31, threads: 1 })),
      { rows: 41, K: 517, N: 130, xStride: 519, yStride: 133, threads: 2 },
      { rows: 24, K: 512, N: 192, xStride: 512, yStride: 192, threads: 3 },
    ]) {
      test(`${isa} bfloat16 activations rows=${c.rows} K=${c.K} N=${c.N} threads=${c.threads}`, () => {
        const seed = 5 + c.rows * 1000 + c.K * 7 + c.N;
        const x = randomArray(c.rows * c.xStride, seed, -3, 3);
        // Exact ties (to even: down, then up) and denormals, which the rounding must keep (not flush).
        x.set([1 + 2 ** -8, 1 + 3 * 2 ** -8, 1e-39, -3.3e-39, 2 ** -130], 0);
        const { data, decoded } = makeWeights(randomArray(c.N * c.K, seed + 1), 'bfloat16');
        const bias = randomArray(c.N, seed + 2);
        const y = testing.linear({
          x, rows: c.rows, K: c.K, N: c.N, xStride: c.xStride, yStride: c.yStride,
          weight: data, weightDtype: 'bfloat16', bias, isa, threads: c.threads, bf16Activations: true,
        });
        const rounded = new Float32Array(x.length);
        for (let i = 0; i < x.length; i++) rounded[i] = decodeHalf(encodeHalf(x[i], BF16), BF16);
        expect(rounded.some((v, i) => v !== x[i])).toBe(true);
        const { want, tol } = reference(rounded, c.rows, c.K, c.xStride, decoded, c.N, bias, c.yStride);
        expectClose(y, want, tol, 'linear');
      });
    }
  }

  // The rounding of x itself, where a product shows it: ties to even, denormals kept and a NaN, on the
  // one-row tile (rows 1) and the GEMM (rows 12), every set. vdpbf16ps reads denormal inputs as zero
  // whatever MXCSR says (Intel SDM, VDPBF16PS), so on avx512_bf16 their products are 0: |x| < 1.2e-38,
  // far below anything a product's float32 sum could keep beside normal activations.
  for (const isa of ISAS) {
    for (const rows of [1, 12]) {
      test(`${isa} bfloat16 activations round ties to even and keep denormals, rows=${rows}`, () => {
        const K = 4;
        const N = 4;
        const row = [1 + 2 ** -8, 1 + 3 * 2 ** -8, 1e-39, -3.3e-39];
        const x = new Float32Array(rows * K);
        for (let r = 0; r < rows; r++) x.set(row, r * K);
        // Weight row n picks x[n] alone, scaled by 2^100 so a denormal's product is a normal float.
        const w = new Float32Array(N * K);
        for (let n = 0; n < N; n++) w[n * K + n] = 2 ** 100;
        const y = testing.linear({ x, rows, K, N, weight: testing.f32ToBf16(w), weightDtype: 'bfloat16', isa, bf16Activations: true });
        const want = row.map((v) => decodeHalf(encodeHalf(v, BF16), BF16) * 2 ** 100);
        expect(want[0]).toBe(2 ** 100);
        expect(want[1]).toBe((1 + 2 ** -6) * 2 ** 100);
        expect(want[2]).not.toBe(0);
        if (isa === 'avx512_bf16') want[2] = want[3] = 0;
        for (let r = 0; r < rows; r++) {
          for (let n = 0; n < N; n++) expect(y[r * N + n]).toBe(Math.fround(want[n]));
        }
        x[0] = NaN;
        expect(Number.isNaN(testing.linear({ x, rows, K, N, weight: testing.f32ToBf16(w), weightDtype: 'bfloat16', isa, bf16Activations: true })[0])).toBe(true);
      });
    }
  }

  // int8 weight-only: codes and a float32 scale per row, against dequantize-then-multiply in float64 (x
  // float32 as engines give it; bf16Activations, for bfloat16 weights only, must leave int8 alone). The kernel multiplies codes and applies
  // the scale to the finished sum; the order differs from the reference only by float32 rounding.
  for (const isa of ISAS) {
    for (const bf16Activations of [false, true]) {
      for (const c of [
        ...[1, 2, 3, 4, 5, 7, 9].map((rows) => ({ rows, K: 77, N: 29, xStride: 80, yStride: 31, threads: 1 })),
        { rows: 1, K: 64, N: 50, xStride: 64, yStride: 50, threads: 1 },
        { rows: 70, K: 131, N: 101, xStride: 133, yStride: 103, threads: 2 },
        { rows: 1, K: 517, N: 389, xStride: 517, yStride: 389, threads: 2 },
        // decode ranges long enough for avx512::decodeInt8's four streams (a quarter >= 64 rows), with a tail of K
        { rows: 1, K: 200, N: 600, xStride: 200, yStride: 600, threads: 2 },
        { rows: 1, K: 77, N: 521, xStride: 80, yStride: 521, threads: 1 },
      ]) {
        test(`${isa} int8 bf16Activations=${bf16Activations} rows=${c.rows} K=${c.K} N=${c.N} threads=${c.threads}`, () => {
          const seed = 9 + c.rows * 1000 + c.K * 7 + c.N;
          const x = randomArray(c.rows * c.xStride, seed, -3, 3);
          const random = rng(seed + 1);
          const codes = Int8Array.from({ length: c.N * c.K }, () => Math.floor(random() * 255) - 127);
          const scales = randomArray(c.N, seed + 2, 0.001, 0.05);
          const bias = randomArray(c.N, seed + 3);
          const y = testing.linear({
            x, rows: c.rows, K: c.K, N: c.N, xStride: c.xStride, yStride: c.yStride,
            weight: codes, weightDtype: 'int8', scales, bias, isa, threads: c.threads, bf16Activations,
            // the weight-only path on every set; kernels-int8-act.test.ts tests the quantized-input one
            int8Activations: 'float',
          });
          const decoded = Float64Array.from(codes, (q, i) => q * scales[Math.floor(i / c.K)]);
          const { want, tol } = reference(x, c.rows, c.K, c.xStride, decoded, c.N, bias, c.yStride);
          expectClose(y, want, tol, 'linear');
        });
      }
    }
  }

  // int4 weight-only (decision 0014): codes packed two a byte in 32-element blocks (element j low nibble,
  // j + 16 high nibble, as code + 8), a bfloat16 scale per row and group, packed here by a TS encoder of the
  // documented layout. Every set computes llama.cpp's Q4_0 x Q8_0 maths (linear_int4.cpp): x quantized to
  // int8 per block of 32 (float32 arithmetic, round half to even: emulated here with Math.fround), exact
  // integer block dot products, each scaled by dw * dx. The reference does the same in float64, so only
  // the kernels' float32 rounding of dw * dx and of the block sums separates them: 1e-5 of the sum of the
  // block terms' magnitudes (the issue asks 1e-4). Separately, the result must stay within 1% of the
  // magnitudes of dequantize-then-multiply with x unquantized (the activations' own rounding, ~0.4% of a
  // block's largest input, and well above any wrong index or scale). Group sizes 32, 64, 96 and 128; rows
  // cover every row grouping of the AVX2 and VNNI tiles (2, 1); K = 64, 96, 160, 224, 288
  // and 3136 leave a last unit of 2, 3, 1, 3, 1 and 2 blocks (the VNNI decode row's tails below); N = 29 and 389 leave feature tails; misaligned scales
  // take the kernel's copy path; a zero block of x has no scale.
  function packInt4(codes: Int8Array, N: number, K: number): Uint8Array {
    const out = new Uint8Array((N * K) / 2);
    for (let n = 0; n < N; n++) {
      for (let b = 0; b < K; b += 32) {
        for (let j = 0; j < 16; j++) {
          out[(n * K + b) / 2 + j] = (codes[n * K + b + j] + 8) | ((codes[n * K + b + j + 16] + 8) << 4);
        }
      }
    }
    return out;
  }
  /** x's row r quantized as the kernels do: codes, and each block's scale (float32 arithmetic). */
  function quantizeActivations(x: Float32Array, r: number, xStride: number, K: number): { q: Int8Array; d: Float64Array } {
    const q = new Int8Array(K);
    const d = new Float64Array(K / 32);
    for (let b = 0; b < K / 32; b++) {
      let amax = 0;
      for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[r * xStride + b * 32 + j]));
      const id = amax !== 0 ? Math.fround(127 / amax) : 0;
      d[b] = Math.fround(amax / 127);
      for (let j = 0; j < 32; j++) q[b * 32 + j] = roundHalfEven(Math.fround(x[r * xStride + b * 32 + j] * id));
    }
    return { q, d };
  }
  for (const isa of ISAS) {
    for (const c of [
      ...[1, 2, 3, 4, 5, 7, 9].map((rows) => ({ rows, K: 96, N: 29, G: 32, xStride: 100, yStride: 31, threads: 1, misalign: false })),
      { rows: 1, K: 128, N: 50, G: 64, xStride: 128, yStride: 50, threads: 1, misalign: true },
      { rows: 70, K: 256, N: 101, G: 128, xStride: 260, yStride: 103, threads: 2, misalign: false },
      { rows: 1, K: 512, N: 389, G: 32, xStride: 512, yStride: 389, threads: 2, misalign: true },
      { rows: 6, K: 384, N: 53, G: 128, xStride: 384, yStride: 53, threads: 1, misalign: false },
      { rows: 1, K: 64, N: 17, G: 32, xStride: 64, yStride: 17, threads: 1, misalign: false },
      { rows: 3, K: 160, N: 24, G: 32, xStride: 161, yStride: 24, threads: 1, misalign: false },
      { rows: 5, K: 224, N: 33, G: 32, xStride: 224, yStride: 35, threads: 2, misalign: false },
      { rows: 2, K: 288, N: 19, G: 96, xStride: 290, yStride: 19, threads: 1, misalign: false },
      // The VNNI decode row (linear_int4_avx512_bf16.cpp) takes steps of 16 blocks, then a tail of 1-4 units:
      // K = 3136 is six steps and 2 blocks, 480 a tail of three units and a partial one, 640 one step and a
      // whole unit, 1024 two steps and no tail.
      { rows: 1, K: 3136, N: 11, G: 64, xStride: 3136, yStride: 11, threads: 1, misalign: false },
      { rows: 1, K: 480, N: 13, G: 32, xStride: 480, yStride: 13, threads: 1, misalign: false },
      { rows: 3, K: 640, N: 9, G: 32, xStride: 641, yStride: 9, threads: 2, misalign: false },
      { rows: 1, K: 1024, N: 7, G: 128, xStride: 1024, yStride: 7, threads: 1, misalign: true },
      // Prefill tiles of many rows (row triples, then a pair or a last row) over whole and partial last units.
      { rows: 8, K: 3136, N: 13, G: 32, xStride: 3136, yStride: 13, threads: 1, misalign: false },
      { rows: 64, K: 480, N: 50, G: 32, xStride: 482, yStride: 50, threads: 2, misalign: true },
      // A thread's range of >= 256 features is read as four streams of quarters (and the leftover rows alone).
      { rows: 1, K: 480, N: 263, G: 32, xStride: 480, yStride: 263, threads: 1, misalign: false },
      { rows: 1, K: 544, N: 517, G: 32, xStride: 544, yStride: 519, threads: 2, misalign: true },
    ]) {
      test(`${isa} int4 group=${c.G} rows=${c.rows} K=${c.K} N=${c.N} threads=${c.threads} misalign=${c.misalign}`, () => {
        const seed = 13 + c.rows * 1000 + c.K * 7 + c.N;
        const x = randomArray(c.rows * c.xStride, seed, -3, 3);
        x.fill(0, 32, 64); // row 0's second block is zero
        const random = rng(seed + 1);
        const codes = Int8Array.from({ length: c.N * c.K }, () => Math.floor(random() * 16) - 8);
        const groups = c.K / c.G;
        // Scales of both signs (the Q4_0 rule gives negative ones), as bfloat16 bits.
        const scaleValues = randomArray(c.N * groups, seed + 2, -0.05, 0.05);
        const scales = Uint16Array.from(scaleValues, (v) => encodeHalf(v, BF16));
        const bias = randomArray(c.N, seed + 3);
        const y = testing.linearInt4({
          x, rows: c.rows, K: c.K, N: c.N, groupSize: c.G, xStride: c.xStride, yStride: c.yStride,
          codes: packInt4(codes, c.N, c.K), scales, bias, isa, threads: c.threads, misalign: c.misalign,
        });
        const { want, tol } = strided(c.rows, c.N, c.yStride);
        const near = strided(c.rows, c.N, c.yStride);
        for (let r = 0; r < c.rows; r++) {
          const { q, d } = quantizeActivations(x, r, c.xStride, c.K);
          for (let n = 0; n < c.N; n++) {
            let s = bias[n];
            let mag = Math.abs(bias[n]);
            let f = bias[n];
            let fmag = Math.abs(bias[n]);
            for (let b = 0; b < c.K / 32; b++) {
              const dw = decodeHalf(scales[n * groups + Math.floor((b * 32) / c.G)], BF16);
              let isum = 0;
              for (let j = 0; j < 32; j++) {
                const k = b * 32 + j;
                isum += codes[n * c.K + k] * q[k];
                f += codes[n * c.K + k] * dw * x[r * c.xStride + k];
                fmag += Math.abs(codes[n * c.K + k] * dw * x[r * c.xStride + k]);
              }
              s += dw * d[b] * isum;
              mag += Math.abs(dw * d[b] * isum);
            }
            want[r * c.yStride + n] = s;
            tol[r * c.yStride + n] = relTol(s, mag);
            near.want[r * c.yStride + n] = f;
            near.tol[r * c.yStride + n] = 0.01 * fmag;
          }
        }
        expectClose(y, want, tol, 'int4 x int8 activations');
        expectClose(y, near.want, near.tol, 'int4 against unquantized activations');
        // W4A16 (KILN_CPU_INT4_ACTIVATIONS=float32): dequantize-then-multiply, float32 summation order only.
        const yf = testing.linearInt4({
          x, rows: c.rows, K: c.K, N: c.N, groupSize: c.G, xStride: c.xStride, yStride: c.yStride,
          codes: packInt4(codes, c.N, c.K), scales, bias, isa, threads: c.threads, misalign: c.misalign, floatActivations: true,
        });
        const decoded = Float64Array.from(codes, (v, i) => {
          const n = Math.floor(i / c.K);
          return v * decodeHalf(scales[n * groups + Math.floor((i % c.K) / c.G)], BF16);
        });
        const exact = reference(x, c.rows, c.K, c.xStride, decoded, c.N, bias, c.yStride);
        expectClose(yf, exact.want, exact.tol, 'int4 with float32 activations');
      });
    }
  }

  test('int4 arguments are checked: group size, codes and scales lengths', () => {
    const x = new Float32Array(2 * 64);
    const ok = { x, rows: 2, K: 64, N: 2, groupSize: 32, codes: new Uint8Array(64), scales: new Uint16Array(4) };
    expect(testing.linearInt4(ok)).toHaveLength(4);
    expectError(() => testing.linearInt4({ ...ok, groupSize: 48 }), 'RangeError');
    expectError(() => testing.linearInt4({ ...ok, groupSize: 128 }), 'RangeError');
    expectError(() => testing.linearInt4({ ...ok, codes: new Uint8Array(63) }), 'RangeError');
    expectError(() => testing.linearInt4({ ...ok, scales: new Uint16Array(2) }), 'RangeError');
    expectError(() => testing.linearInt4({ ...ok, scales: new Float32Array(4) as never }), 'TypeError');
  });

  test('int8 weights need their scales, and only they take scales', () => {
    const x = new Float32Array(6);
    expectError(() => testing.linear({ x, rows: 2, K: 3, N: 2, weight: new Int8Array(6), weightDtype: 'int8' }), 'TypeError');
    expectError(() => testing.linear({ x, rows: 2, K: 3, N: 2, weight: new Int8Array(6), weightDtype: 'int8', scales: new Float32Array(3) }), 'RangeError');
    expectError(() => testing.linear({ x, rows: 2, K: 3, N: 2, weight: new Float32Array(6), weightDtype: 'float32', scales: new Float32Array(2) }), 'RangeError');
    expectError(() => testing.rmsNorm({ x, rows: 2, H: 3, weight: new Int8Array(3) as never, weightDtype: 'int8' as never, eps: 1e-5 }), 'RangeError');
  });

  test('bf16Activations leaves float32 and float16 weights alone', () => {
    const x = randomArray(3 * 40, 11, -3, 3);
    for (const dtype of ['float32', 'float16'] as const) {
      const { data } = makeWeights(randomArray(5 * 40, 12), dtype);
      const args = { x, rows: 3, K: 40, N: 5, weight: data, weightDtype: dtype, isa: ISAS[ISAS.length - 1] };
      expect(testing.linear({ ...args, bf16Activations: true })).toEqual(testing.linear(args));
    }
  });

  test('rejects inconsistent arguments', () => {
    const x = new Float32Array(10);
    const w = new Float32Array(6);
    expectError(() => testing.linear({ x, rows: 2, K: 6, N: 1, weight: w, weightDtype: 'float32' }), 'RangeError');
    expectError(() => testing.linear({ x, rows: 1, K: 3, N: 3, weight: w, weightDtype: 'float32' }), 'RangeError');
    expectError(() => testing.linear({ x, rows: 1, K: 3, N: 2, weight: w, weightDtype: 'float16' }), 'TypeError');
    expectError(() => testing.linear({ x, rows: 1, K: 3, N: 2, xStride: 2, weight: w, weightDtype: 'float32' }), 'RangeError');
    expectError(() =>
      testing.linear({ x, rows: 1, K: 3, N: 2, weight: w, weightDtype: 'float32', bias: new Float32Array(3) }),
      'RangeError',
    );
    expectError(() =>
      testing.linear({ x, rows: 1, K: 3, N: 2, weight: w, weightDtype: 'float32', isa: 'sse' as 'avx2' }),
      'RangeError',
    );
  });
});

// ---------------------------------------------------------------------------------------------------
describe('embedding', () => {
  for (const isa of ISAS) {
    for (const dtype of DTYPES) {
      for (const [numTokens, threads, scale] of [
        [7, 1, 1],
        [7, 1, 2.5],
        [2000, 2, Math.sqrt(37)],
      ]) {
        test(`${isa} ${dtype} tokens=${numTokens} scale=${scale.toFixed(2)} threads=${threads}`, () => {
          const vocab = 11;
          const hidden = 37;
          const outStride = 40;
          const { data, decoded } = makeWeights(randomArray(vocab * hidden, 3), dtype);
          const r = rng(numTokens);
          const ids = Int32Array.from({ length: numTokens }, () => Math.floor(r() * vocab));
          const out = testing.embedding({ ids, table: data, tableDtype: dtype, hidden, scale, outStride, isa, threads });
          const { want, tol } = strided(numTokens, hidden, outStride);
          for (let t = 0; t < numTokens; t++) {
            for (let i = 0; i < hidden; i++) {
              want[t * outStride + i] = decoded[ids[t] * hidden + i] * Math.fround(scale);
              tol[t * outStride + i] = relTol(want[t * outStride + i]);
            }
          }
          expectClose(out, want, tol, 'embedding');
        });
      }
    }
  }

  // The portable 16-bit decoders (used by embedding and every generic kernel) on every bit pattern.
  for (const [dtype, fmt] of [
    ['float16', F16],
    ['bfloat16', BF16],
  ] as const) {
    test(`${dtype} table with all 65536 bit patterns decodes exactly`, () => {
      const table = new Uint16Array(65536).map((_, i) => i);
      const ids = Int32Array.from({ length: 256 }, (_, i) => 255 - i);
      const out = testing.embedding({ ids, table, tableDtype: dtype, hidden: 256 });
      for (let t = 0; t < 256; t++) {
        for (let i = 0; i < 256; i++) {
          const want = decodeHalf(ids[t] * 256 + i, fmt);
          const got = out[t * 256 + i];
          if (!(Number.isNaN(want) ? Number.isNaN(got) : Object.is(got, want))) {
            throw new Error(`${dtype} 0x${(ids[t] * 256 + i).toString(16)}: got ${got} want ${want}`);
          }
        }
      }
    });
  }

  test('rejects an id outside the vocabulary', () => {
    const table = new Float32Array(12);
    expectError(() => testing.embedding({ ids: Int32Array.of(3), table, tableDtype: 'float32', hidden: 4 }), 'RangeError');
    expectError(() => testing.embedding({ ids: Int32Array.of(-1), table, tableDtype: 'float32', hidden: 4 }), 'RangeError');
  });
});

// ---------------------------------------------------------------------------------------------------
describe('rmsNorm', () => {
  for (const isa of ISAS) {
    for (const dtype of DTYPES) {
      for (const [rows, weightOffset, threads] of [
        [5, 0, 1],
        [5, 1, 1],
        [1200, 0, 2],
      ]) {
        test(`${isa} ${dtype} rows=${rows} offset=${weightOffset} threads=${threads}`, () => {
          const H = 67;
          const xStride = 70;
          const yStride = 71;
          const eps = 1e-6;
          const x = randomArray(rows * xStride, rows + 11, -3, 3);
          const { data, decoded } = makeWeights(randomArray(H, 5, 0.5, 1.5), dtype);
          const y = testing.rmsNorm({ x, rows, H, xStride, yStride, weight: data, weightDtype: dtype, eps, weightOffset, isa, threads });
          const { want, tol } = strided(rows, H, yStride);
          for (let r = 0; r < rows; r++) {
            let ss = 0;
            for (let i = 0; i < H; i++) ss += x[r * xStride + i] ** 2;
            const inv = 1 / Math.sqrt(ss / H + Math.fround(eps));
            for (let i = 0; i < H; i++) {
              const v = x[r * xStride + i] * inv * (weightOffset + decoded[i]);
              want[r * yStride + i] = v;
              tol[r * yStride + i] = relTol(v);
            }
          }
          expectClose(y, want, tol, 'rmsNorm');
        });
      }
    }
  }
});

// ---------------------------------------------------------------------------------------------------
describe('elementwise', () => {
  const silu = (v: number) => v / (1 + Math.exp(-v));
  // Inputs include large magnitudes, where exp under- or overflows.
  function inputs(n: number, seed: number): Float32Array {
    const a = randomArray(n, seed, -8, 8);
    const extremes = [0, -0, 1e-20, -1e-20, 30, -30, 87, -87, 100, -100, 1000, -1000];
    for (let i = 0; i < extremes.length && i < n; i++) a[i * 5] = extremes[i];
    return a;
  }

  for (const isa of ISAS) {
    for (const [rows, threads] of [
      [5, 1],
      [1100, 2],
    ]) {
      const cols = 67;
      const aStride = 70;
      const bStride = 69;
      const outStride = 71;
      const a = inputs(rows * aStride, 21);
      const b = inputs(rows * bStride, 22);
      const opts = { rows, cols, outStride, isa, threads };

      const check = (got: Float32Array, f: (x: number, y: number) => number, what: string) => {
        const { want, tol } = strided(rows, cols, outStride);
        for (let r = 0; r < rows; r++) {
          for (let i = 0; i < cols; i++) {
            const v = f(a[r * aStride + i], b[r * bStride + i]);
            want[r * outStride + i] = v;
            // Relative, with an absolute floor far below anything but exp's underflow region.
            tol[r * outStride + i] = relTol(v) + 1e-35;
          }
        }
        expectClose(got, want, tol, what);
      };

      test(`${isa} add rows=${rows} threads=${threads}`, () => {
        const got = testing.add({ a, b, aStride, bStride, ...opts });
        const { want, tol } = strided(rows, cols, outStride);
        for (let r = 0; r < rows; r++) {
          for (let i = 0; i < cols; i++) {
            const x = a[r * aStride + i];
            const y = b[r * bStride + i];
            want[r * outStride + i] = x + y;
            tol[r * outStride + i] = relTol(x + y, Math.abs(x) + Math.abs(y));
          }
        }
        expectClose(got, want, tol, 'add');
      });
      test(`${isa} mul rows=${rows} threads=${threads}`, () => {
        check(testing.mul({ a, b, aStride, bStride, ...opts }), (x, y) => x * y, 'mul');
      });
      test(`${isa} silu rows=${rows} threads=${threads}`, () => {
        check(testing.silu({ a, aStride, ...opts }), (x) => silu(x), 'silu');
      });
      test(`${isa} swiglu rows=${rows} threads=${threads}`, () => {
        check(testing.swiglu({ gate: a, up: b, gateStride: aStride, upStride: bStride, ...opts }), (x, y) => silu(x) * y, 'swiglu');
      });
    }
  }
});

// ---------------------------------------------------------------------------------------------------
describe('rope', () => {
  for (const isa of ISAS) {
    for (const interleaved of [false, true]) {
      for (const [rotaryDim, scaling, numTokens, threads] of [
        [20, 1, 5, 1],
        [12, 1.25, 5, 1], // partial rotary: the last 8 features are copied
        [20, 1, 600, 2],
      ]) {
        test(`${isa} interleaved=${interleaved} rotaryDim=${rotaryDim} tokens=${numTokens} threads=${threads}`, () => {
          const numHeads = 3;
          const headDim = 20;
          const xStride = 64;
          const yStride = 61;
          const x = randomArray(numTokens * xStride, 31);
          const r = rng(numTokens);
          const positions = Int32Array.from({ length: numTokens }, (_, t) => (t < 3 ? [0, 1, 4097][t] : Math.floor(r() * 8192)));
          const invFreq = Float32Array.from({ length: rotaryDim / 2 }, (_, i) => 1 / 10000 ** ((2 * i) / rotaryDim));
          const y = testing.rope({
            x, numTokens, xStride, yStride, positions, numHeads, headDim, rotaryDim, interleaved, invFreq,
            attentionScaling: scaling, isa, threads,
          });
          const { want, tol } = strided(numTokens, numHeads * headDim, yStride);
          const half = rotaryDim / 2;
          for (let t = 0; t < numTokens; t++) {
            for (let h = 0; h < numHeads; h++) {
              const xo = t * xStride + h * headDim;
              const yo = t * yStride + h * headDim;
              for (let i = 0; i < half; i++) {
                // transformers: float32 angle, float32 cos/sin, times attention_scaling in float32.
                const angle = Math.fround(positions[t] * invFreq[i]);
                const c = Math.fround(Math.fround(Math.cos(angle)) * Math.fround(scaling));
                const s = Math.fround(Math.fround(Math.sin(angle)) * Math.fround(scaling));
                const i1 = interleaved ? 2 * i : i;
                const i2 = interleaved ? 2 * i + 1 : i + half;
                const a = x[xo + i1];
                const b = x[xo + i2];
                want[yo + i1] = a * c - b * s;
                want[yo + i2] = b * c + a * s;
                tol[yo + i1] = relTol(0, Math.abs(a * c) + Math.abs(b * s));
                tol[yo + i2] = relTol(0, Math.abs(b * c) + Math.abs(a * s));
              }
              for (let d = rotaryDim; d < headDim; d++) want[yo + d] = x[xo + d];
            }
          }
          expectClose(y, want, tol, 'rope');
        });
      }
    }
  }
});

// ---------------------------------------------------------------------------------------------------
// Two geometries: head dim 28 (16 + 8 + 4) with 4-token blocks walks every tail of the AVX2 kernel (short
// dot products, runs of fewer than 8 keys); head dim 40 with 16-token blocks its main paths (scores of 8
// keys at a time, 32 output features per pass over V, runs starting mid-block under the sliding window).
// 64 / 32: AVX-512 tiles with no masked head-dim tail (28 and 40 have one) and runs longer than 16 keys.
for (const [headDim, tokensPerBlock] of [[28, 4], [40, 16], [64, 32]]) {
  describe(`attention (paged KV cache) headDim=${headDim} tokensPerBlock=${tokensPerBlock}`, () => {
    const numHeads = 4;
    const numKvHeads = 2; // GQA: query heads 0,1 read kv head 0; 2,3 read kv head 1
    const numLayers = 2;
    const layer = 1;
    const numBlocks = 40;
    const rowSize = numKvHeads * headDim;
    const blockFloats = numLayers * 2 * tokensPerBlock * rowSize;
    const scale = 1 / Math.sqrt(headDim);

    /** The true K and V of each sequence position, for the reference. */
    class Sequences {
      k: Float32Array[][] = [];
      v: Float32Array[][] = [];
      record(seq: number, pos: number, k: Float32Array, v: Float32Array) {
        (this.k[seq] ??= [])[pos] = k;
        (this.v[seq] ??= [])[pos] = v;
      }
    }

    interface Step {
      positions: number[];
      tokenSeq: number[];
    }

    // Builds one step's q/k/v (strided wider than needed) from the seed, records k/v in `seqs`.
    function makeStep(step: Step, seqs: Sequences, seed: number) {
      const T = step.positions.length;
      const qStride = numHeads * headDim + 3;
      const kStride = rowSize + 5;
      const vStride = rowSize + 1;
      const q = randomArray(T * qStride, seed, -2, 2);
      const k = randomArray(T * kStride, seed + 1, -2, 2);
      const v = randomArray(T * vStride, seed + 2);
      for (let t = 0; t < T; t++) {
        seqs.record(step.tokenSeq[t], step.positions[t], k.slice(t * kStride, t * kStride + rowSize),
          v.slice(t * vStride, t * vStride + rowSize));
      }
      return { q, k, v, qStride, kStride, vStride, T };
    }

    function reference(step: Step, seqs: Sequences, q: Float32Array, qStride: number, window: number, outStride: number) {
      const T = step.positions.length;
      const { want, tol } = strided(T, numHeads * headDim, outStride);
      for (let t = 0; t < T; t++) {
        const p = step.positions[t];
        const s = step.tokenSeq[t];
        const lo = window > 0 ? Math.max(0, p - window + 1) : 0;
        for (let h = 0; h < numHeads; h++) {
          const kvh = Math.floor(h / (numHeads / numKvHeads));
          const scores: number[] = [];
          for (let j = lo; j <= p; j++) {
            let d = 0;
            for (let i = 0; i < headDim; i++) d += q[t * qStride + h * headDim + i] * seqs.k[s][j][kvh * headDim + i];
            scores.push(d * scale);
          }
          const m = Math.max(...scores);
          const e = scores.map((x) => Math.exp(x - m));
          const sum = e.reduce((a, b) => a + b, 0);
          for (let i = 0; i < headDim; i++) {
            let o = 0;
            let mag = 0;
            for (let j = lo; j <= p; j++) {
              const pv = (e[j - lo] / sum) * seqs.v[s][j][kvh * headDim + i];
              o += pv;
              mag += Math.abs(pv);
            }
            want[t * outStride + h * headDim + i] = o;
            // Score errors of ~1e-7 * |q||k| become relative errors of the probabilities; see the top.
            tol[t * outStride + h * headDim + i] = relTol(o, mag) + 1e-7;
          }
        }
      }
      return { want, tol };
    }

    // Two sequences with scattered, non-contiguous block tables.
    const blockTables = [
      Int32Array.from([7, 2, 19, 11, 30, 4, 25, 13, 38, 1, 22, 16]),
      Int32Array.from([3, 35, 9, 0, 28, 17, 6, 33, 12, 21, 39, 5]),
    ];

    function run(step: Step, made: ReturnType<typeof makeStep>, kvPool: Float32Array, window: number, isa: KernelIsa,
                  threads: number, outStride: number) {
      return testing.attention({
        numTokens: made.T, numHeads, numKvHeads, headDim, q: made.q, k: made.k, v: made.v,
        qStride: made.qStride, kStride: made.kStride, vStride: made.vStride, outStride,
        positions: Int32Array.from(step.positions), tokenSeq: Int32Array.from(step.tokenSeq),
        blockTables, tokensPerBlock, numLayers, layer, kvPool, scale, slidingWindow: window, isa, threads,
      });
    }

    const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);

    for (const isa of ISAS) {
      for (const window of [0, 3]) {
        for (const [lenA, lenB, threads] of [
          [7, 5, 1],
          [41, 30, 2],
        ]) {
          test(`${isa} window=${window} prefill ${lenA}+${lenB} tokens, then two decode steps, threads=${threads}`, () => {
            const seqs = new Sequences();
            const kvPool = new Float32Array(numBlocks * blockFloats);
            const outStride = numHeads * headDim + 2;

            // Prefill: both sequences packed into one step.
            const prefill: Step = {
              positions: [...range(0, lenA), ...range(0, lenB)],
              tokenSeq: [...range(0, lenA).map(() => 0), ...range(0, lenB).map(() => 1)],
            };
            const p = makeStep(prefill, seqs, 100 + lenA);
            const out = run(prefill, p, kvPool, window, isa, threads, outStride);
            const ref = reference(prefill, seqs, p.q, p.qStride, window, outStride);
            expectClose(out, ref.want, ref.tol, 'prefill');

            // The cache holds each token's K and V at its block and slot, in the right layer.
            for (const [seq, pos] of [[0, 5], [1, 4], [0, lenA - 1]]) {
              const block = blockTables[seq][Math.floor(pos / tokensPerBlock)];
              const base = ((block * numLayers + layer) * 2) * tokensPerBlock * rowSize + (pos % tokensPerBlock) * rowSize;
              expect(Array.from(kvPool.subarray(base, base + rowSize))).toEqual(Array.from(seqs.k[seq][pos]));
              const vBase = base + tokensPerBlock * rowSize;
              expect(Array.from(kvPool.subarray(vBase, vBase + rowSize))).toEqual(Array.from(seqs.v[seq][pos]));
            }

            // Two decode steps, both sequences at different positions in each, against the cache.
            for (let d = 0; d < 2; d++) {
              const decode: Step = { positions: [lenB + d, lenA + d], tokenSeq: [1, 0] };
              const m = makeStep(decode, seqs, 200 + d);
              const got = run(decode, m, kvPool, window, isa, threads, outStride);
              const r = reference(decode, seqs, m.q, m.qStride, window, outStride);
              expectClose(got, r.want, r.tol, `decode ${d}`);
            }

            // Full recompute: sequence 0 prefilled in one call on a fresh pool gives the same last row as
            // the prefill + decode path.
            const fresh = new Float32Array(numBlocks * blockFloats);
            const T = lenA + 2;
            const full: Step = { positions: range(0, T), tokenSeq: range(0, T).map(() => 0) };
            const qStride = numHeads * headDim;
            const q = new Float32Array(T * qStride);
            const k = new Float32Array(T * rowSize);
            const v = new Float32Array(T * rowSize);
            for (let t = 0; t < T; t++) {
              k.set(seqs.k[0][t], t * rowSize);
              v.set(seqs.v[0][t], t * rowSize);
            }
            const lastQ = makeStep({ positions: [lenB + 1, lenA + 1], tokenSeq: [1, 0] }, new Sequences(), 201).q;
            const lastQStride = numHeads * headDim + 3;
            q.set(lastQ.subarray(lastQStride, lastQStride + qStride), (T - 1) * qStride);
            const recomputed = run(full, { q, k, v, qStride, kStride: rowSize, vStride: rowSize, T }, fresh, window, isa,
              threads, qStride);
            const lastDecode = run(
              { positions: [lenA + 1], tokenSeq: [0] },
              { q: lastQ.subarray(lastQStride), k: seqs.k[0][lenA + 1], v: seqs.v[0][lenA + 1], qStride, kStride: rowSize,
                vStride: rowSize, T: 1 },
              kvPool, window, isa, threads, qStride,
            );
            const lastRow = recomputed.subarray((T - 1) * qStride);
            const r = reference({ positions: [lenA + 1], tokenSeq: [0] }, seqs, lastQ.subarray(lastQStride), qStride, window, qStride);
            expectClose(lastRow, r.want, r.tol, 'full recompute');
            expectClose(lastDecode, Float64Array.from(lastRow), r.tol, 'decode vs full recompute');
          });
        }
      }
    }

    test('rejects positions beyond a block table, bad block ids and bad sequence indices', () => {
      const base = {
        numTokens: 1, numHeads: 2, numKvHeads: 1, headDim: 4, q: new Float32Array(8), k: new Float32Array(4),
        v: new Float32Array(4), tokenSeq: Int32Array.of(0), tokensPerBlock: 2, scale: 1,
        kvPool: new Float32Array(3 * 2 * 2 * 4),
      };
      expectError(() => testing.attention({ ...base, positions: Int32Array.of(2), blockTables: [Int32Array.of(0)] }), 'RangeError');
      expectError(() => testing.attention({ ...base, positions: Int32Array.of(0), blockTables: [Int32Array.of(3)] }), 'RangeError');
      expectError(() =>
        testing.attention({ ...base, positions: Int32Array.of(0), tokenSeq: Int32Array.of(1), blockTables: [Int32Array.of(0)] }),
        'RangeError',
      );
      expectError(() =>
        testing.attention({ ...base, positions: Int32Array.of(0), blockTables: [Int32Array.of(0)], kvPool: new Float32Array(5) }),
        'RangeError',
      );
      expectError(() => testing.attention({ ...base, positions: Int32Array.of(0), blockTables: [[0] as unknown as Int32Array] }), 'TypeError');
      // A valid call on the same arguments works.
      const out = testing.attention({ ...base, positions: Int32Array.of(0), blockTables: [Int32Array.of(2)] });
      expect(out.length).toBe(8);
    });
  });
}

// ---------------------------------------------------------------------------------------------------
describe('gatherRows', () => {
  for (const isa of ISAS) {
    test(`${isa} strided rows, repeated and out of order`, () => {
      const cols = 13;
      const xStride = 16;
      const outStride = 14;
      const x = randomArray(9 * xStride, 41);
      const rows = Int32Array.of(8, 0, 3, 3);
      const out = testing.gatherRows({ x, xStride, rows, cols, outStride, isa });
      const { want, tol } = strided(rows.length, cols, outStride);
      rows.forEach((r, i) => {
        for (let c = 0; c < cols; c++) want[i * outStride + c] = x[r * xStride + c];
      });
      expectClose(out, want, tol, 'gatherRows');
    });
  }

  test('rejects a row outside x', () => {
    expectError(() => testing.gatherRows({ x: new Float32Array(20), xStride: 10, rows: Int32Array.of(1, 2), cols: 10 }), 'RangeError');
  });
});
