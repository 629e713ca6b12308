// The native runtime end to end: small engines written by hand with writeEngine, run by loadEngine, and
// compared with TypeScript references of the same math (full recompute, float64 accumulation).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { loadNative, type NativeEngine, type LoadEngineOptions } from '@kiln/native';
import { rng } from './test-utils';

const native = loadNative();
let tmpDir: string;

beforeAll(() => {
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-runtime-'));
});
afterAll(() => {
  fs.rmSync(tmpDir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------------
// Deterministic data

function randomArray(rand: () => number, n: number, scale: number, offset = 0): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = offset + (rand() * 2 - 1) * scale;
  return a;
}

// ---------------------------------------------------------------------------------------------------
// A tiny engine builder: values laid out one after another in the arena, weights packed at 64-byte offsets.

interface Limits {
  maxBatchSize: number;
  maxSeqLen: number;
  maxNumTokens: number;
  maxLogitRows: number;
}
type Rows = 'tokens' | 'logitRows';

const align64 = (n: number) => Math.ceil(n / 64) * 64;

class Program {
  values: { name: string; rows: Rows; cols: number; offset: number; rowStride: number }[] = [];
  weights: { name: string; shape: number[]; data: Float32Array }[] = [];
  ops: { op: string; inputs: number[]; outputs: number[]; weights: Record<string, number>; attrs: object }[] = [];
  private cursor = 0;

  constructor(readonly limits: Limits) {}

  private maxRows(rows: Rows): number {
    return rows === 'tokens' ? this.limits.maxNumTokens : this.limits.maxLogitRows;
  }

  /** A fresh [rows, cols] buffer; returns its value index. */
  value(name: string, rows: Rows, cols: number): number {
    return this.view(name, rows, cols, this.alloc(rows, cols), cols);
  }

  /** Bytes for a [rows, cols] buffer, for views that share it. */
  alloc(rows: Rows, cols: number): number {
    const offset = this.cursor;
    this.cursor = align64(offset + this.maxRows(rows) * cols * 4);
    return offset;
  }

  view(name: string, rows: Rows, cols: number, offset: number, rowStride: number): number {
    this.values.push({ name, rows, cols, offset, rowStride });
    return this.values.length - 1;
  }

  weight(name: string, shape: number[], data: Float32Array): number {
    expect(data.length).toBe(shape.reduce((a, b) => a * b, 1));
    this.weights.push({ name, shape, data });
    return this.weights.length - 1;
  }

  op(op: string, inputs: number[], outputs: number[], weights: Record<string, number> = {}, attrs: object = {}): void {
    this.ops.push({ op, inputs, outputs, weights, attrs });
  }

  header(opts: {
    vocabSize: number;
    logits: number;
    kvCache: { numLayers: number; numKvHeads: number; headDim: number; tokensPerBlock: number };
    isa?: string;
    backend?: string;
  }): Record<string, unknown> {
    let offset = 0;
    const weights = this.weights.map((w) => {
      const entry = { name: w.name, dtype: 'float32', shape: w.shape, offset, byteLength: w.data.length * 4 };
      offset = align64(offset + w.data.length * 4);
      return entry;
    });
    // A deep copy, so that tests may edit the header without touching the program.
    return structuredClone({
      format: 'kiln-engine',
      formatVersion: 1,
      target: { backend: opts.backend ?? 'cpu', isa: opts.isa ?? 'generic' },
      limits: this.limits,
      model: { architecture: 'TestForCausalLM', vocabSize: opts.vocabSize, note: 'hand-built "test" \u00e9ngine' },
      kvCache: opts.kvCache,
      arena: { bytes: Math.max(64, this.cursor) },
      values: this.values,
      outputs: { logits: opts.logits },
      weights,
      ops: this.ops,
    });
  }

  async write(file: string, header: Record<string, unknown>): Promise<string> {
    const p = path.join(tmpDir, file);
    await native.writeEngine({
      path: p,
      header: JSON.stringify(header),
      weights: this.weights.map((w) => ({ name: w.name, dtype: 'float32' as const, shape: w.shape, data: w.data })),
    });
    return p;
  }
}

// ---------------------------------------------------------------------------------------------------
// TypeScript references (float64 accumulation over float32 weights)

function matvec(w: Float32Array, n: number, k: number, x: ArrayLike<number>, bias?: Float32Array): number[] {
  const y = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    let s = bias ? bias[i] : 0;
    for (let j = 0; j < k; j++) s += w[i * k + j] * x[j];
    y[i] = s;
  }
  return y;
}

function rmsNorm(x: number[], w: Float32Array, eps: number): number[] {
  let ss = 0;
  for (const v of x) ss += v * v;
  const r = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * r * w[i]);
}

/** The class of a typed array, across realms (Jest's globals are not the addon's). */
function typeName(x: unknown): string {
  return Object.prototype.toString.call(x).slice(8, -1);
}

function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol = 2e-4): void {
  expect(actual.length).toBe(expected.length);
  let worst = 0;
  let worstAt = -1;
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i] - expected[i]) / (1 + Math.abs(expected[i]));
    if (!(err <= worst)) {
      worst = err;
      worstAt = i;
    }
  }
  if (!(worst <= tol)) {
    throw new Error(`mismatch at ${worstAt}: got ${actual[worstAt]}, expected ${expected[worstAt]} (rel ${worst})`);
  }
}

/** Greedy decode with a reference `logitsOf(sequence)` = logits of the sequence's last position. */
function referenceGenerate(
  prompt: number[],
  maxTokens: number,
  endId: number,
  maxSeqLen: number,
  logitsOf: (seq: number[]) => number[],
): { outputIds: number[]; generationLogits: number[][]; finishReason: string } {
  const seq = [...prompt];
  const outputIds: number[] = [];
  const generationLogits: number[][] = [];
  for (;;) {
    const logits = logitsOf(seq);
    const token = argmax(logits);
    outputIds.push(token);
    generationLogits.push(logits);
    seq.push(token);
    if (endId >= 0 && token === endId) return { outputIds, generationLogits, finishReason: 'stop' };
    if (outputIds.length >= maxTokens || seq.length >= maxSeqLen) return { outputIds, generationLogits, finishReason: 'length' };
  }
}

async function generateWithTokens(
  engine: NativeEngine,
  request: Parameters<NativeEngine['generate']>[0],
): Promise<Awaited<ReturnType<NativeEngine['generate']>>> {
  const seen: number[] = [];
  const result = await engine.generate(request, (t) => seen.push(t));
  expect(seen).toEqual(Array.from(result.outputIds));
  return result;
}

// ---------------------------------------------------------------------------------------------------
// (a) embedding -> rms_norm -> linear (LM head) -> gather_rows

describe('a norm + LM head program', () => {
  const V = 37;
  const H = 16;
  const eps = 1e-5;
  const scale = 1.5;
  const rand = rng(1);
  const table = randomArray(rand, V * H, 1);
  const norm = randomArray(rand, H, 0.5, 1);
  const head = randomArray(rand, V * H, 1);
  const limits = { maxBatchSize: 2, maxSeqLen: 32, maxNumTokens: 16, maxLogitRows: 16 };

  function build(): Program {
    const p = new Program(limits);
    const x = p.value('embed.out', 'tokens', H);
    const xn = p.value('norm.out', 'tokens', H);
    const all = p.value('head.out', 'tokens', V);
    const logits = p.value('logits', 'logitRows', V);
    p.op('embedding', [], [x], { table: p.weight('embed', [V, H], table) }, { scale });
    p.op('rms_norm', [x], [xn], { weight: p.weight('norm', [H], norm) }, { eps, weightOffset: 0 });
    p.op('linear', [xn], [all], { weight: p.weight('head', [V, H], head) });
    p.op('gather_rows', [all], [logits]);
    expect(logits).toBe(3);
    return p;
  }

  const logitsOfToken = (t: number) => {
    const x = Array.from(table.subarray(t * H, (t + 1) * H), (v) => v * scale);
    return matvec(head, V, H, rmsNorm(x, norm, eps));
  };

  let engine: NativeEngine;
  beforeAll(async () => {
    const p = build();
    const file = await p.write('a.engine', p.header({ vocabSize: V, logits: 3, kvCache: { numLayers: 1, numKvHeads: 1, headDim: 4, tokensPerBlock: 8 } }));
    engine = await native.loadEngine(file, { numThreads: 2 });
  });
  afterAll(() => engine?.dispose());

  test('info describes the header', () => {
    expect(engine.info).toMatchObject({ formatVersion: 1, backend: 'cpu', isa: 'generic', vocabSize: V, ...limits });
    expect(JSON.parse(engine.info.modelJson)).toEqual({
      architecture: 'TestForCausalLM',
      vocabSize: V,
      note: 'hand-built "test" \u00e9ngine',
    });
  });

  test('context logits, generation logits and greedy tokens match TypeScript', async () => {
    const prompt = [3, 17, 0, 36, 5];
    const result = await generateWithTokens(engine, {
      inputIds: Int32Array.from(prompt),
      maxTokens: 9,
      endId: -1,
      returnContextLogits: true,
      returnGenerationLogits: true,
    });
    expect(typeName(result.contextLogits)).toBe('Float32Array');
    expect(typeName(result.generationLogits)).toBe('Float32Array');
    expectClose(result.contextLogits!, prompt.flatMap(logitsOfToken));

    const ref = referenceGenerate(prompt, 9, -1, limits.maxSeqLen, (seq) => logitsOfToken(seq[seq.length - 1]));
    expect(Array.from(result.outputIds)).toEqual(ref.outputIds);
    expect(result.finishReason).toBe('length');
    expectClose(result.generationLogits!, ref.generationLogits.flat());
    for (let k = 0; k < result.outputIds.length; k++) {
      expect(argmax(result.generationLogits!.subarray(k * V, (k + 1) * V))).toBe(result.outputIds[k]);
    }
  });

  test('without logits requested, only tokens come back', async () => {
    const result = await engine.generate({
      inputIds: Int32Array.from([1, 2]),
      maxTokens: 3,
      endId: -1,
      returnContextLogits: false,
      returnGenerationLogits: false,
    });
    expect(typeName(result.outputIds)).toBe('Int32Array');
    expect(result.outputIds.length).toBe(3);
    expect(result.contextLogits).toBeUndefined();
    expect(result.generationLogits).toBeUndefined();
  });
});

// ---------------------------------------------------------------------------------------------------
// (b) one attention layer: embedding, q/k/v (column views of one fused buffer), rope, paged attention,
// output projection, residual, final norm, gather, LM head.

const B = { V: 29, H: 16, numHeads: 2, numKvHeads: 1, headDim: 8, eps: 1e-6, theta: 10000 };

function attentionWeights(seed: number) {
  const rand = rng(seed);
  const { V, H, numHeads, numKvHeads, headDim } = B;
  const half = headDim / 2;
  const invFreq = new Float32Array(half);
  for (let i = 0; i < half; i++) invFreq[i] = 1 / Math.pow(B.theta, (2 * i) / headDim);
  return {
    table: randomArray(rand, V * H, 1),
    ln1: randomArray(rand, H, 0.3, 1),
    wq: randomArray(rand, numHeads * headDim * H, 0.5),
    bq: randomArray(rand, numHeads * headDim, 0.2),
    wk: randomArray(rand, numKvHeads * headDim * H, 0.5),
    wv: randomArray(rand, numKvHeads * headDim * H, 0.5),
    wo: randomArray(rand, H * numHeads * headDim, 0.5),
    lnf: randomArray(rand, H, 0.3, 1),
    head: randomArray(rand, V * H, 1),
    invFreq,
  };
}
type AttnWeights = ReturnType<typeof attentionWeights>;

function buildAttention(w: AttnWeights, limits: Limits): Program {
  const { V, H, numHeads, numKvHeads, headDim } = B;
  const qCols = numHeads * headDim;
  const kvCols = numKvHeads * headDim;
  const p = new Program(limits);
  const x = p.value('x', 'tokens', H);
  const xn = p.value('xn', 'tokens', H);
  const qkvStride = qCols + 2 * kvCols;
  const qkv = p.alloc('tokens', qkvStride);
  const q = p.view('q', 'tokens', qCols, qkv, qkvStride);
  const k = p.view('k', 'tokens', kvCols, qkv + qCols * 4, qkvStride);
  const v = p.view('v', 'tokens', kvCols, qkv + (qCols + kvCols) * 4, qkvStride);
  const qr = p.value('q.rope', 'tokens', qCols);
  const kr = p.value('k.rope', 'tokens', kvCols);
  const a = p.value('attn', 'tokens', qCols);
  const o = p.value('o', 'tokens', H);
  const h = p.value('h', 'tokens', H);
  const hn = p.value('hn', 'tokens', H);
  const g = p.value('gathered', 'logitRows', H);
  const logits = p.value('logits', 'logitRows', V);
  const invFreq = p.weight('rope.inv_freq', [headDim / 2], w.invFreq);
  p.op('embedding', [], [x], { table: p.weight('embed', [V, H], w.table) }, { scale: 1 });
  p.op('rms_norm', [x], [xn], { weight: p.weight('ln1', [H], w.ln1) }, { eps: B.eps, weightOffset: 0 });
  p.op('linear', [xn], [q], { weight: p.weight('wq', [qCols, H], w.wq), bias: p.weight('bq', [qCols], w.bq) });
  p.op('linear', [xn], [k], { weight: p.weight('wk', [kvCols, H], w.wk) });
  p.op('linear', [xn], [v], { weight: p.weight('wv', [kvCols, H], w.wv) });
  const rope = { headDim, rotaryDim: headDim, interleaved: false, attentionScaling: 1 };
  p.op('rope', [q], [qr], { invFreq }, { numHeads, ...rope });
  p.op('rope', [k], [kr], { invFreq }, { numHeads: numKvHeads, ...rope });
  p.op('attention', [qr, kr, v], [a], {}, {
    layer: 0,
    numHeads,
    numKvHeads,
    headDim,
    scale: 1 / Math.sqrt(headDim),
    slidingWindow: 0,
  });
  p.op('linear', [a], [o], { weight: p.weight('wo', [H, qCols], w.wo) });
  p.op('add', [x, o], [h]);
  p.op('rms_norm', [h], [hn], { weight: p.weight('lnf', [H], w.lnf) }, { eps: B.eps, weightOffset: 0 });
  p.op('gather_rows', [hn], [g]);
  p.op('linear', [g], [logits], { weight: p.weight('head', [V, H], w.head) });
  return p;
}

function attentionHeader(p: Program, tokensPerBlock: number, extra: { isa?: string; backend?: string } = {}) {
  return p.header({
    vocabSize: B.V,
    logits: p.values.length - 1,
    kvCache: { numLayers: 1, numKvHeads: B.numKvHeads, headDim: B.headDim, tokensPerBlock },
    ...extra,
  });
}

function rope(x: number[], pos: number, heads: number, invFreq: Float32Array): number[] {
  const d = B.headDim;
  const half = d / 2;
  const y = x.slice();
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(Math.fround(pos) * invFreq[i]);
      const c = Math.cos(angle);
      const s = Math.sin(angle);
      const x1 = x[h * d + i];
      const x2 = x[h * d + i + half];
      y[h * d + i] = x1 * c - x2 * s;
      y[h * d + i + half] = x2 * c + x1 * s;
    }
  }
  return y;
}

/** Logits of every position of `seq`, recomputed from scratch. */
function attentionReference(w: AttnWeights, seq: number[]): number[][] {
  const { V, H, numHeads, numKvHeads, headDim } = B;
  const xs = seq.map((t) => Array.from(w.table.subarray(t * H, (t + 1) * H)));
  const xns = xs.map((x) => rmsNorm(x, w.ln1, B.eps));
  const qs = xns.map((x, pos) => rope(matvec(w.wq, numHeads * headDim, H, x, w.bq), pos, numHeads, w.invFreq));
  const ks = xns.map((x, pos) => rope(matvec(w.wk, numKvHeads * headDim, H, x), pos, numKvHeads, w.invFreq));
  const vs = xns.map((x) => matvec(w.wv, numKvHeads * headDim, H, x));
  const group = numHeads / numKvHeads;
  return seq.map((_, t) => {
    const attn = new Array<number>(numHeads * headDim).fill(0);
    for (let h = 0; h < numHeads; h++) {
      const kvh = Math.floor(h / group);
      const scores: number[] = [];
      for (let j = 0; j <= t; j++) {
        let s = 0;
        for (let d = 0; d < headDim; d++) s += qs[t][h * headDim + d] * ks[j][kvh * headDim + d];
        scores.push(s / Math.sqrt(headDim));
      }
      const m = Math.max(...scores);
      const e = scores.map((s) => Math.exp(s - m));
      const z = e.reduce((a, b) => a + b, 0);
      for (let j = 0; j <= t; j++) {
        for (let d = 0; d < headDim; d++) attn[h * headDim + d] += (e[j] / z) * vs[j][kvh * headDim + d];
      }
    }
    const o = matvec(w.wo, H, numHeads * headDim, attn);
    const hres = xs[t].map((v, i) => v + o[i]);
    return matvec(w.head, V, H, rmsNorm(hres, w.lnf, B.eps));
  });
}

describe('a one-layer attention program', () => {
  const w = attentionWeights(7);
  const prompt = [4, 11, 27, 0, 9, 9, 15, 2, 21, 13];
  const logitsOf = (seq: number[]) => {
    const all = attentionReference(w, seq);
    return all[all.length - 1];
  };

  async function load(
    file: string,
    limits: Limits,
    tokensPerBlock: number,
    options: LoadEngineOptions = {},
    isa = 'generic',
  ): Promise<NativeEngine> {
    const p = buildAttention(w, limits);
    return native.loadEngine(await p.write(file, attentionHeader(p, tokensPerBlock, { isa })), options);
  }

  async function checkAgainstReference(engine: NativeEngine, maxTokens: number, endId = -1) {
    const result = await generateWithTokens(engine, {
      inputIds: Int32Array.from(prompt),
      maxTokens,
      endId,
      returnContextLogits: true,
      returnGenerationLogits: true,
    });
    expectClose(result.contextLogits!, attentionReference(w, prompt).flat());
    const ref = referenceGenerate(prompt, maxTokens, endId, engine.info.maxSeqLen, logitsOf);
    expect(Array.from(result.outputIds)).toEqual(ref.outputIds);
    expect(result.finishReason).toBe(ref.finishReason);
    expectClose(result.generationLogits!, ref.generationLogits.flat());
    return result;
  }

  test('whole-prompt prefill, 16-token blocks', async () => {
    const engine = await load('b1.engine', { maxBatchSize: 1, maxSeqLen: 64, maxNumTokens: 32, maxLogitRows: 32 }, 16, {
      numThreads: 2,
    });
    try {
      const first = await checkAgainstReference(engine, 8);
      expect(first.finishReason).toBe('length');
      expect(first.outputIds.length).toBe(8);
      // The same request again gives the same answer (blocks were freed and are reused).
      const again = await engine.generate({ inputIds: Int32Array.from(prompt), maxTokens: 8, endId: -1, returnContextLogits: false, returnGenerationLogits: false });
      expect(Array.from(again.outputIds)).toEqual(Array.from(first.outputIds));
      // An end token stops generation and is returned.
      const endId = first.outputIds[3];
      const stopped = await checkAgainstReference(engine, 8, endId);
      expect(stopped.finishReason).toBe('stop');
      expect(stopped.outputIds[stopped.outputIds.length - 1]).toBe(endId);
      expect(stopped.outputIds.length).toBe(Array.from(first.outputIds).indexOf(endId) + 1);
    } finally {
      engine.dispose();
    }
  });

  test('chunked prefill (3 tokens per step), 4-token blocks, a KV cache of exactly one sequence', async () => {
    const engine = await load('b2.engine', { maxBatchSize: 1, maxSeqLen: 24, maxNumTokens: 3, maxLogitRows: 3 }, 4, {
      numThreads: 1,
      kvCacheTokens: 23,
    });
    try {
      await checkAgainstReference(engine, 12);
    } finally {
      engine.dispose();
    }
  });

  test('context logits with fewer logit rows than tokens per step', async () => {
    const engine = await load('b3.engine', { maxBatchSize: 1, maxSeqLen: 40, maxNumTokens: 8, maxLogitRows: 1 }, 4);
    try {
      await checkAgainstReference(engine, 5);
    } finally {
      engine.dispose();
    }
  });

  test('generation stops at maxSeqLen with finishReason "length"', async () => {
    const engine = await load('b4.engine', { maxBatchSize: 1, maxSeqLen: 13, maxNumTokens: 4, maxLogitRows: 1 }, 4);
    try {
      const result = await checkAgainstReference(engine, 50);
      expect(result.outputIds.length).toBe(3);
      expect(result.finishReason).toBe('length');
    } finally {
      engine.dispose();
    }
  });

  test('an avx2 engine matches the reference where the CPU has AVX2', async () => {
    if (typeof native.cpuInfo !== 'function' || native.cpuInfo().isa !== 'avx2') return;
    const engine = await load('b5.engine', { maxBatchSize: 1, maxSeqLen: 64, maxNumTokens: 4, maxLogitRows: 4 }, 4, { numThreads: 2 }, 'avx2');
    try {
      expect(engine.info.isa).toBe('avx2');
      await checkAgainstReference(engine, 6);
    } finally {
      engine.dispose();
    }
    // forceGeneric runs the same engine on the portable kernels.
    const generic = await load('b5g.engine', { maxBatchSize: 1, maxSeqLen: 64, maxNumTokens: 4, maxLogitRows: 4 }, 4, { forceGeneric: true }, 'avx2');
    try {
      await checkAgainstReference(generic, 6);
    } finally {
      generic.dispose();
    }
  });

  // One engine file, every kernel set this CPU has: chosen at load, capped by the KILN_CPU_ISA environment
  // variable (issue 12). Jest gives tests a copy of process.env, so each set loads in a child process.
  test('KILN_CPU_ISA picks the kernel set an avx2 engine runs with, up to what the CPU has', async () => {
    if (typeof native.cpuInfo !== 'function' || native.cpuInfo().isa !== 'avx2') return;
    const best = native.cpuInfo().kernels;
    const p = buildAttention(w, { maxBatchSize: 1, maxSeqLen: 64, maxNumTokens: 4, maxLogitRows: 4 });
    const file = await p.write('b5-isa.engine', attentionHeader(p, 4, { isa: 'avx2' }));
    const script = `
      const native = require(${JSON.stringify(process.env.KILN_NATIVE_BINARY ?? path.join(__dirname, '..', 'build', 'Release', 'kiln.node'))});
      native.loadEngine(process.argv[1], { numThreads: 2 }).then(async (engine) => {
        const r = await engine.generate({ inputIds: Int32Array.from(${JSON.stringify(prompt)}), maxTokens: 6, endId: -1,
          returnContextLogits: true, returnGenerationLogits: false });
        console.log(JSON.stringify({ device: engine.info.device, outputIds: Array.from(r.outputIds), context: Array.from(r.contextLogits) }));
        engine.dispose();
      }, (e) => { console.error(e.message); process.exit(3); });`;
    const run = (set: string | undefined, extra: Record<string, string> = {}) => {
      const env = { ...process.env, ...extra };
      delete env.KILN_CPU_ISA;
      // Under tools/sanitize/run.sh: the child's V8 heap alive at exit is not a leak of Kiln's.
      if (env.ASAN_OPTIONS) env.ASAN_OPTIONS += ':detect_leaks=0';
      if (set !== undefined) env.KILN_CPU_ISA = set;
      return spawnSync(process.execPath, ['-e', script, file], { env, encoding: 'utf8' });
    };
    const ladder = ['avx2', 'avx512', 'avx512_bf16'];
    const ref = referenceGenerate(prompt, 6, -1, 64, logitsOf);
    for (const set of [undefined, 'generic', ...ladder.slice(0, ladder.indexOf(best) + 1)]) {
      const child = run(set);
      expect(child.stderr).toBe('');
      const got = JSON.parse(child.stdout);
      expect(got.device).toBe(`cpu (${set ?? best}, 2 threads)`);
      expect(got.outputIds).toEqual(ref.outputIds);
      expectClose(Float32Array.from(got.context), attentionReference(w, prompt).flat());
    }
    const bad = run('sse4');
    expect(bad.status).toBe(3);
    expect(bad.stderr).toContain('KILN_CPU_ISA="sse4" is not a kernel set (expected generic, avx2, avx512 or avx512_bf16)');
    // The int8 linears' input mode (decision 0017) is read at load too.
    const badMode = run(undefined, { KILN_CPU_INT8_ACTIVATIONS: 'int4' });
    expect(badMode.status).toBe(3);
    expect(badMode.stderr).toContain('KILN_CPU_INT8_ACTIVATIONS="int4" is not a mode (expected auto, float, int8, int8x2 or adaptive)');
  });

  test('a KV cache too small for the request is refused, and the engine still works after', async () => {
    const engine = await load('b6.engine', { maxBatchSize: 1, maxSeqLen: 64, maxNumTokens: 16, maxLogitRows: 1 }, 4, { kvCacheTokens: 8 });
    try {
      await expect(
        engine.generate({ inputIds: Int32Array.from(prompt), maxTokens: 2, endId: -1, returnContextLogits: false, returnGenerationLogits: false }),
      ).rejects.toThrow(/kvCacheTokens/);
      const ok = await engine.generate({ inputIds: Int32Array.from([1, 2, 3]), maxTokens: 6, endId: -1, returnContextLogits: false, returnGenerationLogits: false });
      expect(Array.from(ok.outputIds)).toEqual(referenceGenerate([1, 2, 3], 6, -1, 64, logitsOf).outputIds);
    } finally {
      engine.dispose();
    }
  });
});

// ---------------------------------------------------------------------------------------------------
// (c) errors

describe('errors', () => {
  const w = attentionWeights(3);
  const limits = { maxBatchSize: 1, maxSeqLen: 16, maxNumTokens: 8, maxLogitRows: 1 };
  const request = (ids: number[]) => ({
    inputIds: Int32Array.from(ids),
    maxTokens: 2,
    endId: -1,
    returnContextLogits: false,
    returnGenerationLogits: false,
  });

  async function writeVariant(file: string, edit: (h: Record<string, any>) => void): Promise<string> {
    const p = buildAttention(w, limits);
    const h = attentionHeader(p, 4);
    edit(h);
    return p.write(file, h);
  }

  test('an unknown isa or backend is refused, naming it', async () => {
    const avx512 = await writeVariant('isa.engine', (h) => (h.target.isa = 'avx512'));
    await expect(native.loadEngine(avx512)).rejects.toThrow(/target\.isa "avx512"/);
    const tpu = await writeVariant('tpu.engine', (h) => (h.target.backend = 'tpu'));
    await expect(native.loadEngine(tpu)).rejects.toThrow(/target\.backend "tpu"/);
    const cuda = await writeVariant('cuda.engine', (h) => (h.target = { backend: 'cuda', computeCapability: '9.0', activationDType: 'float32' }));
    // This suite runs on machines without CUDA (CI); a CUDA build on a GPU machine runs test/cuda instead.
    await expect(native.loadEngine(cuda)).rejects.toThrow(
      native.cudaInfo().compiled ? /cuda/ : /targets cuda \(compute capability 9\.0\) but this build of @kiln\/native has no CUDA backend/,
    );
  });

  test('int8 and int32 are refused as activation types (weights and indices only), naming the field', async () => {
    const act = await writeVariant('act-int8.engine', (h) => (h.target = { backend: 'cuda', computeCapability: '9.0', activationDType: 'int8' }));
    await expect(native.loadEngine(act)).rejects.toThrow(/target\.activationDType "int8" is not known/);
    const value = await writeVariant('value-int8.engine', (h) => ((h.values[0] as { dtype?: string }).dtype = 'int8'));
    await expect(native.loadEngine(value)).rejects.toThrow(/dtype "int8" is not known/);
    const index = await writeVariant('value-int32.engine', (h) => ((h.values[0] as { dtype?: string }).dtype = 'int32'));
    await expect(native.loadEngine(index)).rejects.toThrow(/dtype "int32" is not known/);
  });

  test('float8_e4m3fn (FP8 weights) is refused as an activation type too', async () => {
    const act = await writeVariant('act-fp8.engine', (h) => (h.target = { backend: 'cuda', computeCapability: '9.0', activationDType: 'float8_e4m3fn' }));
    await expect(native.loadEngine(act)).rejects.toThrow(/target\.activationDType "float8_e4m3fn" is not known/);
    const value = await writeVariant('value-fp8.engine', (h) => ((h.values[0] as { dtype?: string }).dtype = 'float8_e4m3fn'));
    await expect(native.loadEngine(value)).rejects.toThrow(/dtype "float8_e4m3fn" is not known/);
  });

  test('an op referencing a value out of range is refused, naming the op', async () => {
    const file = await writeVariant('range.engine', (h) => (h.ops[2].inputs = [99]));
    await expect(native.loadEngine(file)).rejects.toThrow(/op 2 \(linear\): inputs\[0\] = 99 is out of range/);
  });

  test('an unknown op, attribute or inconsistent shape is refused, naming the op', async () => {
    const unknown = await writeVariant('unknown.engine', (h) => (h.ops[9].op = 'no_such_op'));
    await expect(native.loadEngine(unknown)).rejects.toThrow(/op 9 \(no_such_op\): no kernel for op "no_such_op" on cpu\/float32/);
    const attr = await writeVariant('attr.engine', (h) => (h.ops[1].attrs.epsilon = 1));
    await expect(native.loadEngine(attr)).rejects.toThrow(/op 1 \(rms_norm\): unknown attribute "epsilon"/);
    const heads = await writeVariant('heads.engine', (h) => (h.ops[7].attrs.numKvHeads = 2));
    await expect(native.loadEngine(heads)).rejects.toThrow(/op 7 \(attention\).*numKvHeads/);
    const layer = await writeVariant('layer.engine', (h) => (h.ops[7].attrs.layer = 1));
    await expect(native.loadEngine(layer)).rejects.toThrow(/op 7 \(attention\).*kvCache\.numLayers/);
    const cols = await writeVariant('cols.engine', (h) => (h.ops[12].inputs = [1]));
    await expect(native.loadEngine(cols)).rejects.toThrow(/op 12 \(linear\)/);
  });

  test('bad values and outputs are refused, naming the key', async () => {
    const past = await writeVariant('past.engine', (h) => (h.values[0].offset = h.arena.bytes - 64));
    await expect(native.loadEngine(past)).rejects.toThrow(/header\.values\[0\].*arena\.bytes/);
    const rows = await writeVariant('rows.engine', (h) => (h.values[0].rows = 'batch'));
    await expect(native.loadEngine(rows)).rejects.toThrow(/header\.values\[0\]\.rows "batch"/);
    const logits = await writeVariant('logits.engine', (h) => (h.outputs.logits = 0));
    await expect(native.loadEngine(logits)).rejects.toThrow(/outputs\.logits/);
    const limit = await writeVariant('limits.engine', (h) => (h.limits.maxNumTokens = 0));
    await expect(native.loadEngine(limit)).rejects.toThrow(/maxNumTokens/);
  });

  test('bad requests are rejected; generate after dispose rejects; dispose is idempotent', async () => {
    const engine = await native.loadEngine(await writeVariant('ok.engine', () => {}));
    await expect(engine.generate(request(new Array(16).fill(1)))).rejects.toThrow(/prompt has 16 tokens but the engine's maxSeqLen is 16/);
    await expect(engine.generate(request([1, 29]))).rejects.toThrow(/inputIds\[1\] = 29 is outside the vocabulary/);
    await expect(engine.generate(request([1, -1]))).rejects.toThrow(/inputIds\[1\] = -1/);
    await expect(engine.generate(request([]))).rejects.toThrow(/inputIds is empty/);
    await expect(engine.generate({ ...request([1]), maxTokens: 0 })).rejects.toThrow(/maxTokens/);
    await expect(engine.generate({ ...request([1]), inputIds: [1, 2] as unknown as Int32Array })).rejects.toThrow(/Int32Array/);
    await expect(native.loadEngine(path.join(tmpDir, 'ok.engine'), { numThreads: 0 })).rejects.toThrow(/numThreads/);
    // A prompt of maxSeqLen - 1 tokens still generates exactly one token.
    const last = await engine.generate({ ...request(new Array(15).fill(2)), maxTokens: 5 });
    expect(last.outputIds.length).toBe(1);
    expect(last.finishReason).toBe('length');

    engine.dispose();
    engine.dispose();
    await expect(engine.generate(request([1]))).rejects.toThrow(/dispose/);
  });

  test('dispose while a generate runs lets it finish', async () => {
    const engine = await native.loadEngine(await writeVariant('busy.engine', () => {}));
    const tokens: number[] = [];
    const pending = engine.generate({ ...request([1, 2, 3]), maxTokens: 10 }, (t) => tokens.push(t));
    engine.dispose();
    const result = await pending;
    expect(result.outputIds.length).toBe(10);
    expect(tokens).toEqual(Array.from(result.outputIds));
  });

  test('an onToken that throws rejects the generate with its error', async () => {
    const engine = await native.loadEngine(await writeVariant('throws.engine', () => {}));
    try {
      await expect(
        engine.generate({ ...request([1, 2, 3]), maxTokens: 10 }, () => {
          throw new Error('stop right there');
        }),
      ).rejects.toThrow('stop right there');
      await expect(
        engine.generate({ ...request([1, 2, 3]), maxTokens: 10 }, () => {
          throw 42;
        }),
      ).rejects.toThrow(/onToken threw/);
      const ok = await engine.generate(request([1, 2, 3]));
      expect(ok.outputIds.length).toBe(2);
    } finally {
      engine.dispose();
    }
  });

  test('a missing file is rejected naming the path', async () => {
    const missing = path.join(tmpDir, 'nope.engine');
    await expect(native.loadEngine(missing)).rejects.toThrow(missing);
  });
});
