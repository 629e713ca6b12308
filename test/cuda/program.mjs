// Hand-built engines for the CUDA suite's ops test: the Program builder (the JavaScript twin of
// native/test/runtime.test.ts's: values laid out one after another in the arena, weights packed at
// 64-byte offsets, written with the native writeEngine for any target and weight dtype), the programs
// that cover every op, the requests run on them, and the comparison of two engines' results. Not a
// test file.
import * as path from 'node:path';
import { argmaxRow, compareUpToMargin, fmt, requirePackage, rng, rowRelativeError, topMargin, writeSafetensors } from './helpers.mjs';

const align64 = (n) => Math.ceil(n / 64) * 64;
const ELEMENT_BYTES = { float32: 4, float16: 2, bfloat16: 2 };

export class Program {
  values = [];
  /** { name, shape, data: Float32Array, float32: stays float32 whatever the engine's weight dtype } */
  weights = [];
  ops = [];
  #cursor = 0;

  constructor(limits) {
    this.limits = limits;
  }

  #maxRows(rows) {
    return rows === 'tokens' ? this.limits.maxNumTokens : this.limits.maxLogitRows;
  }

  /** A fresh [rows, cols] matrix; returns its value index. */
  value(name, rows, cols) {
    return this.view(name, rows, cols, this.alloc(rows, cols), cols);
  }

  /** Arena bytes for a [rows, cols] matrix, for views that share it. */
  alloc(rows, cols) {
    const offset = this.#cursor;
    this.#cursor = align64(offset + this.#maxRows(rows) * cols * 4);
    return offset;
  }

  view(name, rows, cols, offset, rowStride) {
    this.values.push({ name, rows, cols, offset, rowStride });
    return this.values.length - 1;
  }

  /** A weight in the engine's weight dtype; `{ float32: true }` for biases, rope frequencies, ALiBi slopes. */
  weight(name, shape, data, { float32 = false } = {}) {
    const elements = shape.reduce((a, b) => a * b, 1);
    if (data.length !== elements) throw new Error(`weight ${name}: ${data.length} values for shape [${shape}]`);
    this.weights.push({ name, shape, data, float32 });
    return this.weights.length - 1;
  }

  op(op, inputs, outputs, weights = {}, attrs = {}) {
    this.ops.push({ op, inputs, outputs, weights, attrs });
    return this.ops.length - 1;
  }

  /** The header for `target` (`{backend: 'cpu', isa}` or `{backend: 'cuda', computeCapability, activationDType}`). */
  header({ target, weightDType = 'float32', vocabSize, logits, kvCache }) {
    let offset = 0;
    const weights = this.weights.map((w) => {
      const dtype = w.float32 ? 'float32' : weightDType;
      const byteLength = w.data.length * ELEMENT_BYTES[dtype];
      const entry = { name: w.name, dtype, shape: w.shape, offset, byteLength };
      offset = align64(offset + byteLength);
      return entry;
    });
    return structuredClone({
      format: 'kiln-engine',
      formatVersion: 1,
      target,
      limits: this.limits,
      model: { architecture: 'TestForCausalLM', vocabSize },
      kvCache,
      arena: { bytes: Math.max(64, this.#cursor) },
      values: this.values,
      outputs: { logits },
      weights,
      ops: this.ops,
    });
  }

  /**
   * Writes `<dir>/<name>.engine`. float32 weights are passed as data; reduced-precision ones go through a
   * float32 safetensors file that the writer casts (round to nearest even), as the builder's do.
   */
  async write(dir, name, header) {
    const native = requirePackage('@kiln/native').loadNative();
    const file = path.join(dir, `${name}.engine`);
    const dtypes = header.weights.map((w) => w.dtype);
    let sourceFile;
    if (dtypes.some((d) => d !== 'float32')) {
      sourceFile = path.join(dir, `${name}.weights.safetensors`);
      writeSafetensors(sourceFile, this.weights.map((w) => ({ name: w.name, shape: w.shape, data: w.data })));
    }
    await native.writeEngine({
      path: file,
      header: JSON.stringify(header),
      weights: this.weights.map((w, i) =>
        dtypes[i] === 'float32'
          ? { name: w.name, dtype: 'float32', shape: w.shape, data: w.data }
          : { name: w.name, dtype: dtypes[i], shape: w.shape, sources: [{ file: sourceFile, tensor: w.name }] },
      ),
    });
    return file;
  }
}

/** Seeded uniform values in offset ± scale. */
export function randomArray(random, n, scale, offset = 0) {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = offset + (random() * 2 - 1) * scale;
  return a;
}

// ---------------------------------------------------------------------------------------------------
// Programs

export const LIMITS = { maxBatchSize: 4, maxSeqLen: 48, maxNumTokens: 32, maxLogitRows: 32 };

/**
 * Every op that is not attention, each feeding the logits: embedding, position_embedding, add,
 * layer_norm with and without bias, rms_norm (whole row; groupSize with weightOffset 1), linear with
 * and without bias, silu, swiglu, gelu (none, tanh), geglu (none, tanh), relu, mul, moe (top 2 of 4,
 * normalized and not), gather_rows, linear with bias on logit rows, softcap.
 */
export function denseProgram() {
  const V = 37;
  const H = 16;
  const F = 24;
  const E = 4;
  const I = 8;
  const POSITIONS = 64;
  const random = rng(101);
  const p = new Program(LIMITS);
  const t = (name, cols = H) => p.value(name, 'tokens', cols);
  const e = t('e');
  const pos = t('pos');
  const x = t('x');
  const n1 = t('n1');
  const n2 = t('n2');
  const r1 = t('r1');
  const r2 = t('r2');
  const g = t('g', F);
  const u = t('u', F);
  const acts = ['silu', 'swiglu', 'gelu', 'gelu_tanh', 'geglu', 'geglu_tanh', 'relu'].map((name) => t(name, F));
  const s1 = t('s1', F);
  const s2 = t('s2', F);
  const s3 = t('s3', F);
  const m1 = t('m1', F);
  const t1 = t('t1', F);
  const t2 = t('t2', F);
  const d = t('d');
  const h = t('h');
  const mo1 = t('mo1');
  const mo2 = t('mo2');
  const y1 = t('y1');
  const y2 = t('y2');
  const yl = p.value('yl', 'logitRows', H);
  const l0 = p.value('l0', 'logitRows', V);
  const logits = p.value('logits', 'logitRows', V);

  p.op('embedding', [], [e], { table: p.weight('wte', [V, H], randomArray(random, V * H, 1)) }, { scale: 1.25 });
  p.op('position_embedding', [], [pos], { table: p.weight('wpe', [POSITIONS, H], randomArray(random, POSITIONS * H, 0.5)) }, { offset: 2 });
  p.op('add', [e, pos], [x]);
  p.op('layer_norm', [x], [n1], {
    weight: p.weight('ln1.w', [H], randomArray(random, H, 0.3, 1)),
    bias: p.weight('ln1.b', [H], randomArray(random, H, 0.2), { float32: true }),
  }, { eps: 1e-5 });
  p.op('layer_norm', [x], [n2], { weight: p.weight('ln2.w', [H], randomArray(random, H, 0.3, 1)) }, { eps: 1e-5 });
  p.op('rms_norm', [n1], [r1], { weight: p.weight('rms1.w', [H], randomArray(random, H, 0.3, 1)) }, { eps: 1e-6, weightOffset: 0 });
  p.op('rms_norm', [n2], [r2], { weight: p.weight('rms2.w', [4], randomArray(random, 4, 0.3)) }, { eps: 1e-6, weightOffset: 1, groupSize: 4 });
  p.op('linear', [r1], [g], {
    weight: p.weight('gate.w', [F, H], randomArray(random, F * H, 0.4)),
    bias: p.weight('gate.b', [F], randomArray(random, F, 0.3), { float32: true }),
  });
  p.op('linear', [r2], [u], { weight: p.weight('up.w', [F, H], randomArray(random, F * H, 0.4)) });
  const [aSilu, aSwiglu, aGelu, aGeluTanh, aGeglu, aGegluTanh, aRelu] = acts;
  p.op('silu', [g], [aSilu]);
  p.op('swiglu', [g, u], [aSwiglu]);
  p.op('gelu', [g], [aGelu], {}, { approximate: 'none' });
  p.op('gelu', [u], [aGeluTanh], {}, { approximate: 'tanh' });
  p.op('geglu', [g, u], [aGeglu], {}, { approximate: 'none' });
  p.op('geglu', [u, g], [aGegluTanh], {}, { approximate: 'tanh' });
  p.op('relu', [u], [aRelu]);
  p.op('add', [aSilu, aSwiglu], [s1]);
  p.op('add', [aGelu, aGeluTanh], [s2]);
  p.op('add', [aGeglu, aGegluTanh], [s3]);
  p.op('mul', [s2, aRelu], [m1]);
  p.op('add', [s1, m1], [t1]);
  p.op('add', [t1, s3], [t2]);
  p.op('linear', [t2], [d], {
    weight: p.weight('down.w', [H, F], randomArray(random, H * F, 0.3)),
    bias: p.weight('down.b', [H], randomArray(random, H, 0.2), { float32: true }),
  });
  p.op('add', [x, d], [h]);
  const moeWeights = (prefix) => ({
    // A wide router: top-2 choices are far from ties, so rounding does not change the experts chosen.
    router: p.weight(`${prefix}.router`, [E, H], randomArray(random, E * H, 3)),
    gate: p.weight(`${prefix}.gate`, [E * I, H], randomArray(random, E * I * H, 0.5)),
    up: p.weight(`${prefix}.up`, [E * I, H], randomArray(random, E * I * H, 0.5)),
    down: p.weight(`${prefix}.down`, [E * H, I], randomArray(random, E * H * I, 0.5)),
  });
  p.op('moe', [h], [mo1], moeWeights('moe1'), { numExperts: E, topK: 2, normalizeTopK: true });
  p.op('moe', [h], [mo2], moeWeights('moe2'), { numExperts: E, topK: 2, normalizeTopK: false });
  p.op('add', [h, mo1], [y1]);
  p.op('add', [y1, mo2], [y2]);
  p.op('gather_rows', [y2], [yl]);
  p.op('linear', [yl], [l0], {
    weight: p.weight('head.w', [V, H], randomArray(random, V * H, 0.8)),
    bias: p.weight('head.b', [V], randomArray(random, V, 0.5), { float32: true }),
  });
  p.op('softcap', [l0], [logits], {}, { cap: 8 });
  return { program: p, vocabSize: V, logits, kvCache: { numLayers: 1, numKvHeads: 1, headDim: 4, tokensPerBlock: 8 } };
}

/**
 * Attention layers: embedding, then per layer rms_norm, q/k/v (column views of one fused buffer, q with
 * a bias), optional rope, paged attention, output projection, residual; final norm, gather, LM head.
 */
export function attentionProgram(v) {
  const V = 41;
  const H = 32;
  const { layers = 1, numHeads, numKvHeads, headDim } = v;
  const random = rng(v.seed);
  const qCols = numHeads * headDim;
  const kvCols = numKvHeads * headDim;
  const p = new Program(v.limits ?? LIMITS);
  let x = p.value('x0', 'tokens', H);
  p.op('embedding', [], [x], { table: p.weight('wte', [V, H], randomArray(random, V * H, 1)) }, { scale: 1 });
  let invFreq;
  if (v.rotaryDim) {
    const half = v.rotaryDim / 2;
    const data = Float32Array.from({ length: half }, (_, i) => 1 / Math.pow(v.theta ?? 10000, (2 * i) / v.rotaryDim));
    invFreq = p.weight('rope.inv_freq', [half], data, { float32: true });
  }
  let alibi;
  if (v.alibi) alibi = p.weight('alibi.slopes', [numHeads], Float32Array.from({ length: numHeads }, (_, h) => 2 ** (-(h + 1))), { float32: true });
  for (let layer = 0; layer < layers; layer++) {
    const L = `l${layer}`;
    const xn = p.value(`${L}.xn`, 'tokens', H);
    p.op('rms_norm', [x], [xn], { weight: p.weight(`${L}.ln`, [H], randomArray(random, H, 0.3, 1)) }, { eps: 1e-6, weightOffset: 0 });
    const stride = qCols + 2 * kvCols;
    const fused = p.alloc('tokens', stride);
    const q = p.view(`${L}.q`, 'tokens', qCols, fused, stride);
    const k = p.view(`${L}.k`, 'tokens', kvCols, fused + qCols * 4, stride);
    const val = p.view(`${L}.v`, 'tokens', kvCols, fused + (qCols + kvCols) * 4, stride);
    p.op('linear', [xn], [q], {
      weight: p.weight(`${L}.wq`, [qCols, H], randomArray(random, qCols * H, 0.5)),
      bias: p.weight(`${L}.bq`, [qCols], randomArray(random, qCols, 0.2), { float32: true }),
    });
    p.op('linear', [xn], [k], { weight: p.weight(`${L}.wk`, [kvCols, H], randomArray(random, kvCols * H, 0.5)) });
    p.op('linear', [xn], [val], { weight: p.weight(`${L}.wv`, [kvCols, H], randomArray(random, kvCols * H, 0.5)) });
    let qr = q;
    let kr = k;
    if (v.rotaryDim) {
      qr = p.value(`${L}.q.rope`, 'tokens', qCols);
      kr = p.value(`${L}.k.rope`, 'tokens', kvCols);
      const rope = { headDim, rotaryDim: v.rotaryDim, interleaved: v.interleaved ?? false, attentionScaling: v.attentionScaling ?? 1 };
      p.op('rope', [q], [qr], { invFreq }, { numHeads, ...rope });
      p.op('rope', [k], [kr], { invFreq }, { numHeads: numKvHeads, ...rope });
    }
    const a = p.value(`${L}.attn`, 'tokens', qCols);
    const attrs = { layer, numHeads, numKvHeads, headDim, scale: 1 / Math.sqrt(headDim), slidingWindow: v.slidingWindow ?? 0 };
    if (v.softcap) attrs.softcap = v.softcap;
    p.op('attention', [qr, kr, val], [a], alibi === undefined ? {} : { alibiSlopes: alibi }, attrs);
    const o = p.value(`${L}.o`, 'tokens', H);
    p.op('linear', [a], [o], { weight: p.weight(`${L}.wo`, [H, qCols], randomArray(random, H * qCols, 0.5)) });
    const next = p.value(`x${layer + 1}`, 'tokens', H);
    p.op('add', [x, o], [next]);
    x = next;
  }
  const hn = p.value('hn', 'tokens', H);
  p.op('rms_norm', [x], [hn], { weight: p.weight('lnf', [H], randomArray(random, H, 0.3, 1)) }, { eps: 1e-6, weightOffset: 0 });
  const gathered = p.value('gathered', 'logitRows', H);
  p.op('gather_rows', [hn], [gathered]);
  const logits = p.value('logits', 'logitRows', V);
  p.op('linear', [gathered], [logits], { weight: p.weight('head', [V, H], randomArray(random, V * H, 1)) });
  return { program: p, vocabSize: V, logits, kvCache: { numLayers: layers, numKvHeads, headDim, tokensPerBlock: 4 }, requests: v.requests };
}

export const PROGRAMS = [
  ['elementwise, norms, linear, activations, moe, softcap', denseProgram],
  ['attention: GQA (4 heads, 2 kv), 2 layers, rope', () => attentionProgram({ seed: 11, layers: 2, numHeads: 4, numKvHeads: 2, headDim: 8, rotaryDim: 8 })],
  ['attention: MQA, partial rope (rotaryDim 8 of 16)', () => attentionProgram({ seed: 12, numHeads: 4, numKvHeads: 1, headDim: 16, rotaryDim: 8 })],
  ['attention: interleaved partial rope, attentionScaling 1.25, sliding window 6, softcap 3', () =>
    attentionProgram({ seed: 13, numHeads: 4, numKvHeads: 2, headDim: 16, rotaryDim: 8, interleaved: true, attentionScaling: 1.25, slidingWindow: 6, softcap: 3 })],
  ['attention: ALiBi, no rope, MHA', () => attentionProgram({ seed: 14, numHeads: 4, numKvHeads: 4, headDim: 8, alibi: true })],
  // The head dims of real models, with prompts longer than a 64-token query tile and a 64-key tile: the
  // cuda backend's tiled (tensor-core) prefill attention and its decode attention grouped by KV head
  // (1, 2, 4 and 8 query heads per KV head).
  ['attention: head dim 64, GQA (8 heads, 2 kv), rope, long prompts', () =>
    attentionProgram({ seed: 15, numHeads: 8, numKvHeads: 2, headDim: 64, rotaryDim: 64, limits: LONG_LIMITS, requests: LONG_REQUESTS })],
  ['attention: head dim 128, MQA, sliding window 50, softcap 20, ALiBi, long prompts', () =>
    attentionProgram({ seed: 16, numHeads: 4, numKvHeads: 1, headDim: 128, slidingWindow: 50, softcap: 20, alibi: true, limits: LONG_LIMITS, requests: LONG_REQUESTS })],
  ['attention: head dim 128, GQA (16 heads, 2 kv), rope, long prompts', () =>
    attentionProgram({ seed: 17, numHeads: 16, numKvHeads: 2, headDim: 128, rotaryDim: 128, limits: LONG_LIMITS, requests: LONG_REQUESTS })],
  ['attention: head dim 64, MHA, ALiBi, sliding window 40, long prompts', () =>
    attentionProgram({ seed: 18, numHeads: 2, numKvHeads: 2, headDim: 64, alibi: true, slidingWindow: 40, limits: LONG_LIMITS, requests: LONG_REQUESTS })],
  ['attention: head dim 64, GQA (4 heads, 2 kv), softcap 30, long prompts', () =>
    attentionProgram({ seed: 19, numHeads: 4, numKvHeads: 2, headDim: 64, rotaryDim: 32, softcap: 30, limits: LONG_LIMITS, requests: LONG_REQUESTS })],
];

// ---------------------------------------------------------------------------------------------------
// Requests and their comparison

/** Row tolerance of a device engine against the cpu engine with the same weights, by dtype. */
export const TOLERANCE = { float32: 1e-5, bfloat16: 3e-2, float16: 1e-2 };
export const MIN_MARGIN = 0.1;

// Several sequences packed in one step, then decoding together: prompts of 1 to 29 tokens.
export const REQUESTS = [
  { prompt: [5], maxTokens: 12 },
  { prompt: [3, 17, 0, 22, 5], maxTokens: 9 },
  { prompt: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], maxTokens: 6 },
  { prompt: Array.from({ length: 29 }, (_, i) => (i * 7 + 3) % 37), maxTokens: 4 },
];

// Prompts past one 64-token tile (and one 64-key tile), with a short one and a decode-only one beside.
export const LONG_LIMITS = { maxBatchSize: 4, maxSeqLen: 256, maxNumTokens: 256, maxLogitRows: 256 };
export const LONG_REQUESTS = [
  { prompt: Array.from({ length: 150 }, (_, i) => (i * 11 + 5) % 41), maxTokens: 6 },
  { prompt: Array.from({ length: 70 }, (_, i) => (i * 13 + 1) % 41), maxTokens: 8 },
  { prompt: [7], maxTokens: 10 },
  { prompt: Array.from({ length: 20 }, (_, i) => (i * 3 + 2) % 41), maxTokens: 5 },
];

export async function runRequests(engine, requests = REQUESTS) {
  return Promise.all(
    requests.map(({ prompt, maxTokens }) =>
      engine.generate({ inputIds: Int32Array.from(prompt), maxTokens, endId: -1, returnContextLogits: true, returnGenerationLogits: true }),
    ),
  );
}

/** Compares the device's results with the cpu's; returns the worst row error and the failures. */
export function compareRuns(device, reference, vocab, dtype, requests = REQUESTS) {
  const failures = [];
  let worst = 0;
  requests.forEach(({ prompt }, r) => {
    const out = device[r];
    const ref = reference[r];
    const P = prompt.length;
    for (let row = 0; row < P; row++) worst = Math.max(worst, rowRelativeError(out.contextLogits, row, ref.contextLogits, row, vocab) || 0);
    if (out.contextLogits.some(Number.isNaN)) failures.push(`request ${r}: NaN in context logits`);
    const outIds = Array.from(out.outputIds);
    const refIds = Array.from(ref.outputIds);
    let comparable = refIds.length;
    if (dtype === 'float32') {
      const first = outIds.findIndex((id, k) => id !== refIds[k]);
      if (first >= 0 || outIds.length !== refIds.length) {
        failures.push(`request ${r}: tokens ${JSON.stringify(outIds)} != cpu ${JSON.stringify(refIds)}`);
        comparable = first < 0 ? Math.min(outIds.length, refIds.length) : first + 1;
      }
    } else {
      const c = compareUpToMargin(outIds, refIds, (k) => topMargin(ref.generationLogits, k, vocab), MIN_MARGIN);
      if (c.mismatchAt >= 0) failures.push(`request ${r}: token ${c.mismatchAt} is ${outIds[c.mismatchAt]}, cpu ${refIds[c.mismatchAt]}`);
      const first = outIds.findIndex((id, k) => id !== refIds[k]);
      if (first >= 0) comparable = first + 1;
    }
    comparable = Math.min(comparable, outIds.length, refIds.length);
    for (let k = 0; k < comparable; k++) {
      const e = rowRelativeError(out.generationLogits, k, ref.generationLogits, k, vocab);
      worst = Math.max(worst, Number.isNaN(e) ? Infinity : e);
      // Each generated token is the argmax of its own row (greedy).
      if (outIds[k] !== argmaxRow(out.generationLogits, k, vocab)) failures.push(`request ${r}: token ${k} is not the argmax of its row`);
    }
  });
  if (!(worst <= TOLERANCE[dtype])) failures.push(`worst row error ${fmt(worst)} > ${TOLERANCE[dtype]}`);
  return { worst, failures };
}
