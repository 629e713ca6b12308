// The adapters of the ops added for GPT-2 .. Mixtral, end to end: a hand-built engine that uses
// position_embedding, layer_norm, grouped rms_norm, gelu, geglu, relu, moe and softcap is loaded and run
// by the runtime and compared with a float64 TypeScript reference; then the step failure of a position
// past the learned table, and load-time refusals of bad attributes and shapes.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative, type NativeEngine } from '@kiln/native';
import { rng } from './test-utils';

const native = loadNative();
let tmpDir: string;
beforeAll(() => {
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-runtime-ops-'));
});
afterAll(() => fs.rmSync(tmpDir, { recursive: true, force: true }));

const rand = rng(5);
const randomArray = (n: number, scale: number, offset = 0) => Float32Array.from({ length: n }, () => offset + scale * (2 * rand() - 1));
const align64 = (n: number) => Math.ceil(n / 64) * 64;

const V = 23;
const H = 8;
const F = 12; // MLP width
const E = 3; // experts
const I = 5; // expert width
const P = 10; // learned positions
const OFFSET = 2; // so positions 0..7 are valid
const CAP = 2;
const limits = { maxBatchSize: 1, maxSeqLen: 16, maxNumTokens: 16, maxLogitRows: 16 };

const w = {
  table: randomArray(V * H, 1),
  wpe: randomArray(P * H, 1),
  lnW: randomArray(H, 0.3, 1),
  lnB: randomArray(H, 0.2),
  qn: randomArray(4, 0.3, 1),
  gate: randomArray(F * H, 0.8),
  up: randomArray(F * H, 0.8),
  down: randomArray(H * F, 0.5),
  router: randomArray(E * H, 1.5),
  eGate: randomArray(E * I * H, 0.8),
  eUp: randomArray(E * I * H, 0.8),
  eDown: randomArray(E * H * I, 0.8),
  head: randomArray(V * H, 1),
};

interface Op { op: string; inputs: number[]; outputs: number[]; weights: Record<string, number>; attrs: Record<string, unknown> }

function buildHeader(): { header: any; weights: Array<{ name: string; shape: number[]; data: Float32Array }> } {
  const values: Array<{ name: string; rows: string; cols: number; offset: number; rowStride: number }> = [];
  let cursor = 0;
  const value = (name: string, rows: 'tokens' | 'logitRows', cols: number) => {
    values.push({ name, rows, cols, offset: cursor, rowStride: cols });
    cursor = align64(cursor + (rows === 'tokens' ? limits.maxNumTokens : limits.maxLogitRows) * cols * 4);
    return values.length - 1;
  };
  const weights: Array<{ name: string; shape: number[]; data: Float32Array }> = [];
  const weight = (name: string, shape: number[], data: Float32Array) => weights.push({ name, shape, data }) - 1;
  const ops: Op[] = [];
  const op = (name: string, inputs: number[], outputs: number[], ws: Record<string, number> = {}, attrs: Record<string, unknown> = {}) =>
    ops.push({ op: name, inputs, outputs, weights: ws, attrs });

  const e = value('e', 'tokens', H);
  const p = value('p', 'tokens', H);
  const x = value('x', 'tokens', H);
  const n = value('n', 'tokens', H);
  const r = value('r', 'tokens', H);
  const g = value('g', 'tokens', F);
  const u = value('u', 'tokens', F);
  const gg = value('gg', 'tokens', F);
  const ge = value('ge', 'tokens', F);
  const ru = value('ru', 'tokens', F);
  const s = value('s', 'tokens', F);
  const m = value('m', 'tokens', F);
  const d = value('d', 'tokens', H);
  const mo = value('mo', 'tokens', H);
  const y = value('y', 'tokens', H);
  const yl = value('yl', 'logitRows', H);
  const l0 = value('l0', 'logitRows', V);
  const logits = value('logits', 'logitRows', V);
  op('embedding', [], [e], { table: weight('wte', [V, H], w.table) }, { scale: 1 });
  op('position_embedding', [], [p], { table: weight('wpe', [P, H], w.wpe) }, { offset: OFFSET });
  op('add', [e, p], [x]);
  op('layer_norm', [x], [n], { weight: weight('ln.w', [H], w.lnW), bias: weight('ln.b', [H], w.lnB) }, { eps: 1e-5 });
  op('rms_norm', [n], [r], { weight: weight('qn', [4], w.qn) }, { eps: 1e-6, weightOffset: 0, groupSize: 4 });
  op('linear', [r], [g], { weight: weight('gate', [F, H], w.gate) });
  op('linear', [r], [u], { weight: weight('up', [F, H], w.up) });
  op('geglu', [g, u], [gg], {}, { approximate: 'tanh' });
  op('gelu', [g], [ge], {}, { approximate: 'none' });
  op('relu', [u], [ru]);
  op('add', [ge, ru], [s]);
  op('mul', [gg, s], [m]);
  op('linear', [m], [d], { weight: weight('down', [H, F], w.down) });
  op('moe', [d], [mo], {
    router: weight('router', [E, H], w.router),
    gate: weight('experts.gate', [E * I, H], w.eGate),
    up: weight('experts.up', [E * I, H], w.eUp),
    down: weight('experts.down', [E * H, I], w.eDown),
  }, { numExperts: E, topK: 2, normalizeTopK: true });
  op('add', [x, mo], [y]);
  op('gather_rows', [y], [yl]);
  op('linear', [yl], [l0], { weight: weight('head', [V, H], w.head) });
  op('softcap', [l0], [logits], {}, { cap: CAP });

  let offset = 0;
  const header = {
    format: 'kiln-engine',
    formatVersion: 1,
    target: { backend: 'cpu', isa: 'generic' },
    limits,
    model: { architecture: 'TestForCausalLM', vocabSize: V },
    kvCache: { numLayers: 1, numKvHeads: 1, headDim: 4, tokensPerBlock: 8 },
    arena: { bytes: Math.max(64, cursor) },
    values,
    outputs: { logits },
    weights: weights.map((wt) => {
      const entry = { name: wt.name, dtype: 'float32', shape: wt.shape, offset, byteLength: wt.data.length * 4 };
      offset = align64(offset + wt.data.length * 4);
      return entry;
    }),
    ops,
  };
  return { header, weights };
}

async function writeEngine(file: string, edit?: (h: any) => void): Promise<string> {
  const { header, weights } = buildHeader();
  edit?.(header);
  const p = path.join(tmpDir, file);
  await native.writeEngine({
    path: p,
    header: JSON.stringify(header),
    weights: weights.map((wt) => ({ name: wt.name, dtype: 'float32' as const, shape: wt.shape, data: wt.data })),
  });
  return p;
}

// ---------------------------------------------------------------------------------------------------
// float64 reference of one token at one position (the program has no attention: rows are independent)

const matvec = (m: Float32Array, rows: number, cols: number, x: ArrayLike<number>, rowOffset = 0) =>
  Array.from({ length: rows }, (_, i) => {
    let sum = 0;
    for (let j = 0; j < cols; j++) sum += m[(rowOffset + i) * cols + j] * x[j];
    return sum;
  });
const erf = (x: number): number => {
  // Taylor series: |x| stays small here (pre-activations of a tiny net).
  let term = x;
  let sum = x;
  for (let n = 1; n < 120; n++) {
    term *= (-x * x) / n;
    sum += term / (2 * n + 1);
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
};
const geluErf = (x: number) => 0.5 * x * (1 + erf(x / Math.SQRT2));
const geluTanh = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
const silu = (x: number) => x / (1 + Math.exp(-x));

function logitsOf(token: number, pos: number): number[] {
  const x = Array.from({ length: H }, (_, i) => w.table[token * H + i] + w.wpe[(pos + OFFSET) * H + i]);
  const mean = x.reduce((a, b) => a + b, 0) / H;
  const variance = x.reduce((a, b) => a + (b - mean) ** 2, 0) / H;
  const n = x.map((v, i) => ((v - mean) / Math.sqrt(variance + 1e-5)) * w.lnW[i] + w.lnB[i]);
  const r = n.map(() => 0);
  for (let grp = 0; grp < H / 4; grp++) {
    const part = n.slice(grp * 4, grp * 4 + 4);
    const inv = 1 / Math.sqrt(part.reduce((a, b) => a + b * b, 0) / 4 + 1e-6);
    part.forEach((v, i) => (r[grp * 4 + i] = v * inv * w.qn[i]));
  }
  const g = matvec(w.gate, F, H, r);
  const u = matvec(w.up, F, H, r);
  const m = g.map((gv, i) => geluTanh(gv) * u[i] * (geluErf(gv) + Math.max(u[i], 0)));
  const d = matvec(w.down, H, F, m);
  const logits = matvec(w.router, E, H, d);
  const mx = Math.max(...logits);
  const probs = logits.map((l) => Math.exp(l - mx));
  const total = probs.reduce((a, b) => a + b, 0);
  const top = probs.map((v, e) => [v / total, e]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, 2);
  const kept = top.reduce((a, [p]) => a + p, 0);
  const y = [...x];
  for (const [p, e] of top) {
    const eg = matvec(w.eGate, I, H, d, e * I);
    const eu = matvec(w.eUp, I, H, d, e * I);
    const h = eg.map((v, i) => silu(v) * eu[i]);
    const out = matvec(w.eDown, H, I, h, e * H);
    out.forEach((v, i) => (y[i] += (p / kept) * v));
  }
  return matvec(w.head, V, H, y).map((l) => CAP * Math.tanh(l / CAP));
}

function expectClose(actual: ArrayLike<number>, expected: number[], tol = 2e-4): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i] - expected[i]) / (1 + Math.abs(expected[i]));
    if (!(err <= tol)) throw new Error(`[${i}] got ${actual[i]} want ${expected[i]}`);
  }
}

describe('an engine using every new op', () => {
  let engine: NativeEngine;
  beforeAll(async () => {
    engine = await native.loadEngine(await writeEngine('ops.engine'), { numThreads: 2 });
  });
  afterAll(() => engine?.dispose());

  test('context and generation logits match the float64 reference', async () => {
    const prompt = [3, 17, 0, 22, 5];
    const result = await engine.generate({
      inputIds: Int32Array.from(prompt),
      maxTokens: 3,
      endId: -1,
      returnContextLogits: true,
      returnGenerationLogits: true,
    });
    expectClose(result.contextLogits!, prompt.flatMap((t, pos) => logitsOf(t, pos)));
    // Each generated token is fed back at the next position.
    const seq = [...prompt];
    const want: number[] = [];
    for (let k = 0; k < result.outputIds.length; k++) {
      const logits = logitsOf(seq[seq.length - 1], seq.length - 1);
      want.push(...logits);
      seq.push(result.outputIds[k]);
    }
    expectClose(result.generationLogits!, want);
  });

  test('a position past the learned table fails the request cleanly; the engine keeps working', async () => {
    // Positions 0..7 fit the 10-row table at offset 2; this request would feed position 8.
    await expect(
      engine.generate({ inputIds: Int32Array.from([1, 2, 3, 4, 5, 6]), maxTokens: 5, endId: -1, returnContextLogits: false, returnGenerationLogits: false }),
    ).rejects.toThrow(/position_embedding: position 8 \+ offset 2 is beyond the 10 rows of weight "wpe"/);
    const ok = await engine.generate({ inputIds: Int32Array.from([1, 2]), maxTokens: 2, endId: -1, returnContextLogits: true, returnGenerationLogits: false });
    expectClose(ok.contextLogits!, [...logitsOf(1, 0), ...logitsOf(2, 1)]);
  });
});

describe('load-time checks of the new ops', () => {
  const cases: Array<[string, (h: any) => void, RegExp]> = [
    ['gelu approximation', (h) => (h.ops[8].attrs.approximate = 'fast'), /op 8 \(gelu\): attribute "approximate" must be one of "none", "tanh"/],
    ['softcap cap', (h) => (h.ops[17].attrs.cap = 0), /op 17 \(softcap\): attribute "cap" must be > 0/],
    ['moe topK', (h) => (h.ops[13].attrs.topK = 4), /op 13 \(moe\): attribute "topK" must be an integer in \[1, 3\]/],
    ['moe down shape', (h) => (h.ops[13].weights.down = h.ops[13].weights.gate), /op 13 \(moe\): weight "down" \("experts.gate"\) has shape \[15, 8\], expected \[24, 5\]/],
    ['rms_norm groupSize', (h) => (h.ops[4].attrs.groupSize = 3), /op 4 \(rms_norm\): weight "weight" \("qn"\) has 4 elements but attribute "groupSize" is 3/],
    ['rms_norm without groupSize', (h) => delete h.ops[4].attrs.groupSize, /op 4 \(rms_norm\): input 0 .* has 8 cols, expected 4/],
    ['layer_norm bias', (h) => (h.ops[3].weights.bias = h.ops[4].weights.weight), /op 3 \(layer_norm\): weight "bias" \("qn"\) has shape \[4\], expected \[8\]/],
    ['position_embedding width', (h) => (h.ops[1].weights.table = h.ops[13].weights.down), /op 1 \(position_embedding\): output 0 .* has 8 cols, expected 5/],
    ['swiglu refuses the approximate attribute of geglu', (h) => (h.ops[7].op = 'swiglu'), /op 7 \(swiglu\): unknown attribute "approximate"/],
  ];
  for (const [name, edit, error] of cases) {
    test(name, async () => {
      await expect(native.loadEngine(await writeEngine(`${name.replace(/ /g, '-')}.engine`, edit))).rejects.toThrow(error);
    });
  }
});
