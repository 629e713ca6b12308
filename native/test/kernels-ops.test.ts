// The kernels added for the non-LLaMA architectures (layer_norm, grouped rms_norm, gelu/geglu, relu,
// softcap, position_embedding, moe, attention's softcap and ALiBi) against scalar float64 references, on
// the portable and (where the CPU has it) the AVX2 path, with odd sizes, strided rows and several threads.
// Tolerances follow native/test/kernels.test.ts: relative 1e-5 of the magnitude of the terms summed.
import { loadNative, type KernelIsa, type NativeTesting } from '@kiln/native';
import { rng, randomArray, expectError, kernelIsas } from './test-utils';

const testing: NativeTesting = loadNative().testing;
const ISAS: KernelIsa[] = kernelIsas(testing.cpuIsa());
const DTYPES = ['float32', 'float16', 'bfloat16'] as const;
type DType = (typeof DTYPES)[number];
const REL = 1e-5;

/** Weights of a dtype and the float32 values the kernel must see (decoded by the tested converters). */
function makeWeights(values: Float32Array, dtype: DType): { data: Float32Array | Uint16Array; decoded: Float32Array } {
  if (dtype === 'float32') return { data: values, decoded: values };
  const data = dtype === 'float16' ? testing.f32ToF16(values) : testing.f32ToBf16(values);
  return { data, decoded: dtype === 'float16' ? testing.f16ToF32(data) : testing.bf16ToF32(data) };
}

function expectClose(actual: Float32Array, expected: ArrayLike<number>, tol: ArrayLike<number>, what: string): void {
  expect(actual.length).toBe(expected.length);
  const bad: string[] = [];
  for (let i = 0; i < expected.length; i++) {
    if (!(Math.abs(actual[i] - expected[i]) <= tol[i]) && bad.length < 5) {
      bad.push(`[${i}] got ${actual[i]} want ${expected[i]} (tol ${tol[i]})`);
    }
  }
  if (bad.length) throw new Error(`${what}: ${bad.join('; ')}`);
}

/** Expected output [rows, stride], zeros (tol 0) between rows. */
function strided(rows: number, stride: number): { want: Float64Array; tol: Float64Array } {
  return { want: new Float64Array(rows * stride), tol: new Float64Array(rows * stride) };
}

/** Addon errors come from Node's realm: match by name and by the message naming the call. */
const erf = (x: number): number => {
  // erf by its Taylor series (|x| < 3) or continued fraction of erfc, to ~1e-15: the reference must be
  // far more accurate than the float32 kernels.
  const a = Math.abs(x);
  let r: number;
  if (a < 3) {
    let term = a;
    let sum = a;
    for (let n = 1; n < 200; n++) {
      term *= (-a * a) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17) break;
    }
    r = (2 / Math.sqrt(Math.PI)) * sum;
  } else {
    let f = 0;
    for (let n = 60; n >= 1; n--) f = (n / 2) / (a + f);
    r = 1 - Math.exp(-a * a) / Math.sqrt(Math.PI) / (a + f);
  }
  return x < 0 ? -r : r;
};
const geluRef = (x: number, tanh: boolean) =>
  tanh ? 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3))) : 0.5 * x * (1 + erf(x / Math.SQRT2));
// erf/tanh of float32 arguments cost an absolute ~2e-7 in 1 + erf (or 1 + tanh), times |x| / 2.
const geluTol = (x: number, want: number) => REL * Math.abs(want) + 3e-7 * Math.max(1, Math.abs(x));

// ---------------------------------------------------------------------------------------------------
describe('layerNorm', () => {
  for (const isa of ISAS) {
    for (const dtype of DTYPES) {
      for (const [rows, H, threads, withBias] of [
        [3, 37, 1, true],
        [70, 67, 2, false],
        [4, 8, 1, true],
      ] as const) {
        test(`${isa} ${dtype} rows=${rows} H=${H} bias=${withBias} threads=${threads}`, () => {
          const xStride = H + 3;
          const yStride = H + 1;
          // A large common offset on odd rows: a one-pass variance would lose it to cancellation.
          const x = randomArray(rows * xStride, 10 + H, -2, 2);
          for (let r = 1; r < rows; r += 2) for (let i = 0; i < H; i++) x[r * xStride + i] += 300;
          const w = makeWeights(randomArray(H, 20 + H, 0.5, 1.5), dtype);
          const bias = withBias ? randomArray(H, 30 + H) : undefined;
          const eps = 1e-5;
          const out = testing.layerNorm({ x, rows, H, xStride, yStride, weight: w.data, weightDtype: dtype, bias, eps, isa, threads });
          const { want, tol } = strided(rows, yStride);
          for (let r = 0; r < rows; r++) {
            const xr = Array.from(x.subarray(r * xStride, r * xStride + H));
            const mean = xr.reduce((a, b) => a + b, 0) / H;
            const variance = xr.reduce((a, b) => a + (b - mean) ** 2, 0) / H;
            const inv = 1 / Math.sqrt(variance + eps);
            for (let i = 0; i < H; i++) {
              const n = (xr[i] - mean) * inv * w.decoded[i];
              want[r * yStride + i] = n + (bias ? bias[i] : 0);
              // The float32 mean of values near 300 is off by ~300 * 2^-24, i.e. 2e-5 / std in n.
              tol[r * yStride + i] = REL * (Math.abs(n) + (bias ? Math.abs(bias[i]) : 0)) + 4e-5 * Math.abs(w.decoded[i]) * (Math.abs(mean) / 100 + 0.1);
            }
          }
          expectClose(out, want, tol, 'layerNorm');
        });
      }
    }
  }

  test('rejects a weight or bias of the wrong length', () => {
    const x = new Float32Array(8);
    expectError(() => testing.layerNorm({ x, rows: 2, H: 4, weight: new Float32Array(3), weightDtype: 'float32', eps: 1e-5 }), 'RangeError');
    expectError(() =>
      testing.layerNorm({ x, rows: 2, H: 4, weight: new Float32Array(4), weightDtype: 'float32', bias: new Float32Array(5), eps: 1e-5 }),
      'RangeError',
    );
  });
});

// ---------------------------------------------------------------------------------------------------
describe('rmsNorm with groupSize (per-head norm)', () => {
  for (const isa of ISAS) {
    for (const dtype of DTYPES) {
      for (const [rows, groups, groupSize, threads] of [
        [3, 4, 20, 1],
        [50, 3, 37, 2],
      ]) {
        test(`${isa} ${dtype} ${groups} groups of ${groupSize}, rows=${rows}, threads=${threads}`, () => {
          const H = groups * groupSize;
          const xStride = H + 5;
          const yStride = H + 2;
          const x = randomArray(rows * xStride, 40 + groupSize, -3, 3);
          const w = makeWeights(randomArray(groupSize, 50 + groupSize, 0.5, 1.5), dtype);
          const eps = 1e-6;
          const out = testing.rmsNorm({ x, rows, H, groupSize, xStride, yStride, weight: w.data, weightDtype: dtype, eps, weightOffset: 1, isa, threads });
          const { want, tol } = strided(rows, yStride);
          for (let r = 0; r < rows; r++) {
            for (let g = 0; g < groups; g++) {
              const base = r * xStride + g * groupSize;
              let ss = 0;
              for (let i = 0; i < groupSize; i++) ss += x[base + i] ** 2;
              const inv = 1 / Math.sqrt(ss / groupSize + eps);
              for (let i = 0; i < groupSize; i++) {
                const v = x[base + i] * inv * (1 + w.decoded[i]);
                want[r * yStride + g * groupSize + i] = v;
                tol[r * yStride + g * groupSize + i] = REL * Math.abs(v) + 1e-7;
              }
            }
          }
          expectClose(out, want, tol, 'rmsNorm groups');
        });
      }
    }
  }

  test('rejects a groupSize that does not divide H, and a weight not of groupSize', () => {
    const x = new Float32Array(12);
    expectError(() => testing.rmsNorm({ x, rows: 1, H: 12, groupSize: 5, weight: new Float32Array(5), weightDtype: 'float32', eps: 1e-6 }), 'RangeError');
    expectError(() => testing.rmsNorm({ x, rows: 1, H: 12, groupSize: 4, weight: new Float32Array(12), weightDtype: 'float32', eps: 1e-6 }), 'RangeError');
  });
});

// ---------------------------------------------------------------------------------------------------
describe('gelu, geglu, relu, softcap', () => {
  // Values over [-10, 10] and some special points, odd column count so vector tails run.
  const rows = 5;
  const cols = 83;
  const aStride = 90;
  const outStride = 86;
  const a = randomArray(rows * aStride, 61, -10, 10);
  a.set([0, -0, 1e-8, -1e-8, 5.5, -5.5, 9.99, -9.99, 3, -3], 0);
  const up = randomArray(rows * aStride, 62, -2, 2);

  for (const isa of ISAS) {
    for (const approximate of ['none', 'tanh'] as const) {
      for (const threads of [1, 3]) {
        test(`${isa} gelu approximate=${approximate} threads=${threads}`, () => {
          const out = testing.gelu({ a, rows, cols, aStride, outStride, approximate, isa, threads });
          const { want, tol } = strided(rows, outStride);
          for (let r = 0; r < rows; r++) {
            for (let c = 0; c < cols; c++) {
              const x = a[r * aStride + c];
              const v = geluRef(x, approximate === 'tanh');
              want[r * outStride + c] = v;
              tol[r * outStride + c] = geluTol(x, v);
            }
          }
          expectClose(out, want, tol, 'gelu');
        });

        test(`${isa} geglu approximate=${approximate} threads=${threads}`, () => {
          const gateStride = aStride;
          const upStride = aStride;
          const out = testing.geglu({ gate: a, up, rows, cols, gateStride, upStride, outStride, approximate, isa, threads });
          const { want, tol } = strided(rows, outStride);
          for (let r = 0; r < rows; r++) {
            for (let c = 0; c < cols; c++) {
              const x = a[r * aStride + c];
              const u = up[r * aStride + c];
              const g = geluRef(x, approximate === 'tanh');
              want[r * outStride + c] = g * u;
              tol[r * outStride + c] = geluTol(x, g) * Math.abs(u) + REL * Math.abs(g * u);
            }
          }
          expectClose(out, want, tol, 'geglu');
        });
      }
    }

    test(`${isa} relu and softcap`, () => {
      const relu = testing.relu({ a, rows, cols, aStride, outStride, isa, threads: 2 });
      const cap = 7.5;
      const capped = testing.softcap({ a, rows, cols, aStride, outStride, cap, isa });
      const r1 = strided(rows, outStride);
      const r2 = strided(rows, outStride);
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < cols; c++) {
          const x = a[r * aStride + c];
          r1.want[r * outStride + c] = Math.max(x, 0);
          const v = cap * Math.tanh(x / cap);
          r2.want[r * outStride + c] = v;
          r2.tol[r * outStride + c] = REL * Math.abs(v) + 1e-7;
        }
      }
      expectClose(relu, r1.want, r1.tol, 'relu');
      expectClose(capped, r2.want, r2.tol, 'softcap');
    });
  }

  test('rejects a bad approximation name and a non-positive cap', () => {
    const x = new Float32Array(4);
    expectError(() => testing.gelu({ a: x, rows: 1, cols: 4, approximate: 'fast' as 'tanh' }), 'RangeError');
    expectError(() => testing.softcap({ a: x, rows: 1, cols: 4, cap: 0 }), 'RangeError');
    expectError(() => testing.geglu({ gate: x, up: new Float32Array(3), rows: 1, cols: 4 }), 'RangeError');
  });
});

// ---------------------------------------------------------------------------------------------------
describe('positionEmbedding', () => {
  for (const isa of ISAS) {
    for (const dtype of DTYPES) {
      test(`${isa} ${dtype} offset 2, strided out, two threads`, () => {
        const hidden = 19;
        const tableRows = 12;
        const table = makeWeights(randomArray(tableRows * hidden, 71), dtype);
        const positions = Int32Array.of(0, 5, 9, 3, 3, 1);
        const outStride = hidden + 4;
        const out = testing.positionEmbedding({ positions, table: table.data, tableDtype: dtype, hidden, offset: 2, outStride, isa, threads: 2 });
        const { want, tol } = strided(positions.length, outStride);
        positions.forEach((p, t) => {
          for (let i = 0; i < hidden; i++) want[t * outStride + i] = table.decoded[(p + 2) * hidden + i];
        });
        expectClose(out, want, tol, 'positionEmbedding');
      });
    }
  }

  test('a position past the table (or negative) fails instead of reading outside it', () => {
    const table = new Float32Array(4 * 3);
    const args = { table, tableDtype: 'float32' as const, hidden: 3, offset: 2 };
    expect(testing.positionEmbedding({ ...args, positions: Int32Array.of(0, 1) }).length).toBe(6);
    expectError(() => testing.positionEmbedding({ ...args, positions: Int32Array.of(0, 2) }), 'RangeError');
    expectError(() => testing.positionEmbedding({ ...args, positions: Int32Array.of(-3) }), 'RangeError');
  });
});

// ---------------------------------------------------------------------------------------------------
describe('moe (Mixtral routing)', () => {
  const E = 4;
  const topK = 2;
  const H = 21;
  const I = 13;
  const silu = (x: number) => x / (1 + Math.exp(-x));

  /** The float64 reference; returns the output and which experts each token chose. */
  function reference(x: Float32Array, rows: number, xStride: number, router: Float32Array, gate: Float32Array, up: Float32Array,
                     down: Float32Array, normalize: boolean, outStride: number) {
    const { want, tol } = strided(rows, outStride);
    const chosen: number[][] = [];
    for (let t = 0; t < rows; t++) {
      const xt = x.subarray(t * xStride, t * xStride + H);
      const logits = Array.from({ length: E }, (_, e) => xt.reduce((s, v, i) => s + v * router[e * H + i], 0));
      const m = Math.max(...logits);
      const ex = logits.map((l) => Math.exp(l - m));
      const sum = ex.reduce((a, b) => a + b, 0);
      const probs = ex.map((v) => v / sum);
      const order = probs.map((p, e) => [p, e]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, topK);
      const keptSum = order.reduce((s, [p]) => s + p, 0);
      chosen.push(order.map(([, e]) => e));
      const acc = new Float64Array(H);
      const mag = new Float64Array(H);
      for (const [p, e] of order) {
        const w = normalize ? p / keptSum : p;
        const h = new Float64Array(I);
        for (let j = 0; j < I; j++) {
          let g = 0;
          let u = 0;
          for (let i = 0; i < H; i++) {
            g += xt[i] * gate[(e * I + j) * H + i];
            u += xt[i] * up[(e * I + j) * H + i];
          }
          h[j] = silu(g) * u;
        }
        for (let c = 0; c < H; c++) {
          for (let j = 0; j < I; j++) {
            acc[c] += w * down[(e * H + c) * I + j] * h[j];
            mag[c] += Math.abs(w * down[(e * H + c) * I + j] * h[j]);
          }
        }
      }
      for (let c = 0; c < H; c++) {
        want[t * outStride + c] = acc[c];
        // Two chained float32 matmuls and float32 routing weights: a few times the usual 1e-5.
        tol[t * outStride + c] = 1e-4 * mag[c] + 1e-6;
      }
    }
    return { want, tol, chosen };
  }

  for (const isa of ISAS) {
    for (const dtype of ['float32', 'bfloat16'] as const) {
      for (const normalize of [true, false]) {
        test(`${isa} ${dtype} ${E} experts top-${topK} normalize=${normalize}`, () => {
          const rows = 9;
          const xStride = H + 3;
          const outStride = H + 2;
          const x = randomArray(rows * xStride, 81, -2, 2);
          const router = makeWeights(randomArray(E * H, 82), dtype);
          const gate = makeWeights(randomArray(E * I * H, 83), dtype);
          const up = makeWeights(randomArray(E * I * H, 84), dtype);
          const down = makeWeights(randomArray(E * H * I, 85), dtype);
          const out = testing.moe({
            x, rows, H, I, numExperts: E, topK, normalizeTopK: normalize, xStride, outStride,
            router: router.data, routerDtype: dtype, gate: gate.data, up: up.data, down: down.data, expertDtype: dtype,
            isa, threads: 2,
          });
          const ref = reference(x, rows, xStride, router.decoded, gate.decoded, up.decoded, down.decoded, normalize, outStride);
          // The tokens really are routed differently (so grouping by expert is exercised).
          expect(new Set(ref.chosen.map((c) => [...c].sort().join())).size).toBeGreaterThan(2);
          expect(new Set(ref.chosen.flat()).size).toBe(E);
          expectClose(out, ref.want, ref.tol, 'moe');
        });
      }
    }
  }

  test('ties go to the lower expert index, as torch.topk', () => {
    // A zero router gives every expert probability 1/4: experts 0 and 1 must be picked, each weighted 1/2.
    const rows = 2;
    const x = randomArray(rows * H, 91);
    const gate = randomArray(E * I * H, 92);
    const up = randomArray(E * I * H, 93);
    const down = randomArray(E * H * I, 94);
    const router = new Float32Array(E * H);
    const out = testing.moe({
      x, rows, H, I, numExperts: E, topK, normalizeTopK: true, router, routerDtype: 'float32', gate, up, down,
      expertDtype: 'float32',
    });
    const ref = reference(x, rows, H, router, gate, up, down, true, H);
    expect(ref.chosen).toEqual([[0, 1], [0, 1]]);
    expectClose(out, ref.want, ref.tol, 'moe ties');
  });

  test('rejects topK above numExperts and expert arrays of the wrong size', () => {
    const base = {
      x: new Float32Array(4), rows: 1, H: 4, I: 2, numExperts: 2, topK: 1, router: new Float32Array(8),
      routerDtype: 'float32' as const, gate: new Float32Array(16), up: new Float32Array(16), down: new Float32Array(16),
      expertDtype: 'float32' as const,
    };
    expect(testing.moe(base).length).toBe(4);
    expectError(() => testing.moe({ ...base, topK: 3 }), 'RangeError');
    expectError(() => testing.moe({ ...base, down: new Float32Array(15) }), 'RangeError');
  });
});

// ---------------------------------------------------------------------------------------------------
describe('attention softcap and ALiBi (paged, several sequences)', () => {
  const numHeads = 4;
  const numKvHeads = 2;
  const headDim = 20;
  const tokensPerBlock = 4;
  const numBlocks = 24;
  const rowSize = numKvHeads * headDim;
  const scale = 1 / Math.sqrt(headDim);
  const blockTables = [Int32Array.from([7, 2, 19, 11, 23, 4]), Int32Array.from([3, 15, 9, 0, 20, 17])];
  // BLOOM's slopes for 4 heads: 2^(-8 (h + 1) / 4).
  const slopes = Float32Array.from({ length: numHeads }, (_, h) => 2 ** ((-8 * (h + 1)) / numHeads));

  for (const isa of ISAS) {
    for (const [softcap, alibi] of [
      [2.5, false],
      [0, true],
      [3, true],
    ] as const) {
      test(`${isa} softcap=${softcap} alibi=${alibi}: prefill of two sequences, then a decode step`, () => {
        const kvPool = new Float32Array(numBlocks * 2 * tokensPerBlock * rowSize);
        const keys: Float32Array[][] = [[], []];
        const values: Float32Array[][] = [[], []];
        const runStep = (positions: number[], tokenSeq: number[], seed: number) => {
          const T = positions.length;
          const qStride = numHeads * headDim + 3;
          const q = randomArray(T * qStride, seed, -3, 3);
          const k = randomArray(T * rowSize, seed + 1, -3, 3);
          const v = randomArray(T * rowSize, seed + 2);
          for (let t = 0; t < T; t++) {
            keys[tokenSeq[t]][positions[t]] = k.subarray(t * rowSize, (t + 1) * rowSize);
            values[tokenSeq[t]][positions[t]] = v.subarray(t * rowSize, (t + 1) * rowSize);
          }
          const outStride = numHeads * headDim + 1;
          const out = testing.attention({
            numTokens: T, numHeads, numKvHeads, headDim, q, k, v, qStride, outStride,
            positions: Int32Array.from(positions), tokenSeq: Int32Array.from(tokenSeq), blockTables, tokensPerBlock,
            kvPool, scale, softcap, alibiSlopes: alibi ? slopes : undefined, isa, threads: 2,
          });
          const { want, tol } = strided(T, outStride);
          for (let t = 0; t < T; t++) {
            const s = tokenSeq[t];
            for (let h = 0; h < numHeads; h++) {
              const kvh = Math.floor(h / (numHeads / numKvHeads));
              const scores: number[] = [];
              for (let j = 0; j <= positions[t]; j++) {
                let d = 0;
                for (let i = 0; i < headDim; i++) d += q[t * qStride + h * headDim + i] * keys[s][j][kvh * headDim + i];
                let sc = d * scale;
                if (softcap > 0) sc = softcap * Math.tanh(sc / softcap);
                if (alibi) sc += slopes[h] * j;
                scores.push(sc);
              }
              const m = Math.max(...scores);
              const e = scores.map((x) => Math.exp(x - m));
              const sum = e.reduce((a, b) => a + b, 0);
              for (let i = 0; i < headDim; i++) {
                let o = 0;
                let mag = 0;
                for (let j = 0; j <= positions[t]; j++) {
                  const pv = (e[j] / sum) * values[s][j][kvh * headDim + i];
                  o += pv;
                  mag += Math.abs(pv);
                }
                want[t * outStride + h * headDim + i] = o;
                // Scores up to ~20 (ALiBi at position 20) carry float32 rounding of ~1e-6.
                tol[t * outStride + h * headDim + i] = 1e-5 * mag + 1e-7;
              }
            }
          }
          expectClose(out, want, tol, `positions ${positions.join()}`);
          return out;
        };
        const range = (n: number) => Array.from({ length: n }, (_, i) => i);
        runStep([...range(13), ...range(9)], [...range(13).map(() => 0), ...range(9).map(() => 1)], 300);
        runStep([9, 13], [1, 0], 310);
        runStep([14, 10], [0, 1], 320);
      });
    }
  }

  test('softcap and alibi change the result (they are not ignored)', () => {
    const base = {
      numTokens: 2, numHeads: 2, numKvHeads: 1, headDim: 4, q: randomArray(16, 1, -4, 4), k: randomArray(8, 2, -4, 4),
      v: randomArray(8, 3), positions: Int32Array.of(0, 1), tokenSeq: Int32Array.of(0, 0), blockTables: [Int32Array.of(0)],
      tokensPerBlock: 2, scale: 1,
    };
    const plain = testing.attention({ ...base, kvPool: new Float32Array(16) });
    const capped = testing.attention({ ...base, kvPool: new Float32Array(16), softcap: 0.1 });
    const biased = testing.attention({ ...base, kvPool: new Float32Array(16), alibiSlopes: Float32Array.of(5, -5) });
    expect(Array.from(capped.subarray(8))).not.toEqual(Array.from(plain.subarray(8)));
    expect(Array.from(biased.subarray(8))).not.toEqual(Array.from(plain.subarray(8)));
    expectError(() => testing.attention({ ...base, kvPool: new Float32Array(16), alibiSlopes: Float32Array.of(1) }), 'RangeError');
  });
});
