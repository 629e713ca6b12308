// GEMM algorithms chosen by timing (KILN_CUDA_GEMM_TUNE, decision 0021): a hand-built two-layer LLaMA-like
// engine (hidden 256, 4 heads of 64 with 2 KV heads, rope, a biased q projection, a SwiGLU MLP of 704,
// vocab 512) runs 20 requests at once: one prefill step of ~700 rows (the cuBLASLt path, tuned per
// power-of-two bucket of rows) and decode steps of 20 rows (tuned too, in their first, eager step, then
// replayed as CUDA graphs). Logits and greedy tokens are checked against the cpu engine with the same
// weights, at the ops suite's tolerances, with tuning on and off, in bfloat16 and float32 (float32 holds
// 1e-5: whatever algorithm is chosen, split-K included, only the summation order moves).
//
// The switch is read when an engine loads, so each engine is loaded alone with its setting in the
// environment. KILN_CUDA_GEMM_TUNE_LOG=1 prints each tuning's candidates and times to stderr.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { fmt, makeTmpDir, onCuda, requirePackage, target } from './helpers.mjs';
import { Program, TOLERANCE, compareRuns, randomArray, runRequests } from './program.mjs';

const native = requirePackage('@kiln/native').loadNative();
const work = makeTmpDir('gemm-tune');
after(() => work.remove());

const V = 512;
const H = 256;
const F = 704;
const HEADS = 4;
const KV_HEADS = 2;
const HEAD_DIM = 64;
const LAYERS = 2;
const LIMITS = { maxBatchSize: 24, maxSeqLen: 64, maxNumTokens: 1024, maxLogitRows: 1024 };

/** 20 prompts of 16-55 tokens, 6 new tokens each: a ~700-row prefill step, then 20-row decode steps. */
const REQUESTS = Array.from({ length: 20 }, (_, r) => ({
  prompt: Array.from({ length: 16 + ((r * 7) % 40) }, (_, i) => (i * 31 + r * 17 + 3) % V),
  maxTokens: 6,
}));

function lcg(seed) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function program() {
  const random = lcg(20261201);
  const p = new Program(LIMITS);
  const w = (name, rows, cols) => p.weight(name, [rows, cols], randomArray(random, rows * cols, 1 / Math.sqrt(cols)));
  const norm = (name) => p.weight(name, [H], randomArray(random, H, 0.2, 1));
  const qCols = HEADS * HEAD_DIM;
  const kvCols = KV_HEADS * HEAD_DIM;
  let x = p.value('x0', 'tokens', H);
  p.op('embedding', [], [x], { table: p.weight('wte', [V, H], randomArray(random, V * H, 1)) }, { scale: 1 });
  const invFreq = p.weight('rope.inv_freq', [HEAD_DIM / 2], Float32Array.from({ length: HEAD_DIM / 2 }, (_, i) => 1 / 10000 ** ((2 * i) / HEAD_DIM)), { float32: true });
  for (let layer = 0; layer < LAYERS; layer++) {
    const L = `l${layer}`;
    const xn = p.value(`${L}.xn`, 'tokens', H);
    p.op('rms_norm', [x], [xn], { weight: norm(`${L}.ln1`) }, { eps: 1e-6, weightOffset: 0 });
    const stride = qCols + 2 * kvCols;
    const fused = p.alloc('tokens', stride);
    const q = p.view(`${L}.q`, 'tokens', qCols, fused, stride);
    const k = p.view(`${L}.k`, 'tokens', kvCols, fused + qCols * 4, stride);
    const v = p.view(`${L}.v`, 'tokens', kvCols, fused + (qCols + kvCols) * 4, stride);
    p.op('linear', [xn], [q], { weight: w(`${L}.wq`, qCols, H), bias: p.weight(`${L}.bq`, [qCols], randomArray(random, qCols, 0.2), { float32: true }) });
    p.op('linear', [xn], [k], { weight: w(`${L}.wk`, kvCols, H) });
    p.op('linear', [xn], [v], { weight: w(`${L}.wv`, kvCols, H) });
    const qr = p.value(`${L}.q.rope`, 'tokens', qCols);
    const kr = p.value(`${L}.k.rope`, 'tokens', kvCols);
    const rope = { headDim: HEAD_DIM, rotaryDim: HEAD_DIM, interleaved: false, attentionScaling: 1 };
    p.op('rope', [q], [qr], { invFreq }, { numHeads: HEADS, ...rope });
    p.op('rope', [k], [kr], { invFreq }, { numHeads: KV_HEADS, ...rope });
    const a = p.value(`${L}.attn`, 'tokens', qCols);
    p.op('attention', [qr, kr, v], [a], {}, { layer, numHeads: HEADS, numKvHeads: KV_HEADS, headDim: HEAD_DIM, scale: 1 / Math.sqrt(HEAD_DIM), slidingWindow: 0 });
    const o = p.value(`${L}.o`, 'tokens', H);
    p.op('linear', [a], [o], { weight: w(`${L}.wo`, H, qCols) });
    const mid = p.value(`${L}.mid`, 'tokens', H);
    p.op('add', [x, o], [mid]);
    const mn = p.value(`${L}.mn`, 'tokens', H);
    p.op('rms_norm', [mid], [mn], { weight: norm(`${L}.ln2`) }, { eps: 1e-6, weightOffset: 0 });
    const g = p.value(`${L}.gate`, 'tokens', F);
    const u = p.value(`${L}.up`, 'tokens', F);
    p.op('linear', [mn], [g], { weight: w(`${L}.wg`, F, H) });
    p.op('linear', [mn], [u], { weight: w(`${L}.wu`, F, H) });
    const act = p.value(`${L}.act`, 'tokens', F);
    p.op('swiglu', [g, u], [act]);
    const d = p.value(`${L}.down`, 'tokens', H);
    p.op('linear', [act], [d], { weight: w(`${L}.wd`, H, F) });
    const next = p.value(`x${layer + 1}`, 'tokens', H);
    p.op('add', [mid, d], [next]);
    x = next;
  }
  const hn = p.value('hn', 'tokens', H);
  p.op('rms_norm', [x], [hn], { weight: norm('lnf') }, { eps: 1e-6, weightOffset: 0 });
  const gathered = p.value('gathered', 'logitRows', H);
  p.op('gather_rows', [hn], [gathered]);
  const logits = p.value('logits', 'logitRows', V);
  p.op('linear', [gathered], [logits], { weight: w('head', V, H) });
  return { program: p, logits, kvCache: { numLayers: LAYERS, numKvHeads: KV_HEADS, headDim: HEAD_DIM, tokensPerBlock: 16 } };
}

function computeCapability() {
  return native.cudaInfo?.().devices?.[0]?.computeCapability ?? '9.0';
}

const cpuTarget = () => ({ backend: 'cpu', isa: native.cpuInfo().isa });
/** The engine under test (KILN_CUDA_SUITE_TARGET=cpu: a cpu engine on the portable kernels). */
const deviceTarget = (dtype) =>
  onCuda ? { target: { backend: 'cuda', computeCapability: computeCapability(), activationDType: dtype }, options: {} } : { target: cpuTarget(), options: { forceGeneric: true } };

describe(`GEMM tuning (${target}): prefill and 20-row decode against the cpu engine`, () => {
  const { program: p, logits, kvCache } = program();
  const engines = [];
  let count = 0;
  /** Loads an engine with KILN_CUDA_GEMM_TUNE=`tune` in the environment while it loads (then restored). */
  async function load(t, dtype, tune, options = {}) {
    const file = await p.write(work.dir, `e${count++}`, p.header({ target: t, weightDType: dtype, vocabSize: V, logits, kvCache }));
    const saved = process.env.KILN_CUDA_GEMM_TUNE;
    process.env.KILN_CUDA_GEMM_TUNE = tune;
    try {
      // 20 sequences of at most 64 tokens: a small KV cache, not a share of the device's memory.
      const engine = await native.loadEngine(file, { numThreads: 2, kvCacheTokens: 2048, ...options });
      engines.push(engine);
      return engine;
    } finally {
      if (saved === undefined) delete process.env.KILN_CUDA_GEMM_TUNE;
      else process.env.KILN_CUDA_GEMM_TUNE = saved;
    }
  }
  after(async () => {
    for (const engine of engines) await engine.dispose();
  });

  const references = new Map();
  const reference = (dtype) => {
    if (!references.has(dtype)) {
      references.set(dtype, load(cpuTarget(), dtype, '1').then((engine) => runRequests(engine, REQUESTS)));
    }
    return references.get(dtype);
  };

  for (const [dtype, tune] of [['bfloat16', '1'], ['bfloat16', '0'], ['float32', '1']]) {
    it(`${dtype}, KILN_CUDA_GEMM_TUNE=${tune}: context and generation logits within ${TOLERANCE[dtype]}, greedy tokens equal`, async () => {
      const ref = await reference(dtype);
      const t = deviceTarget(dtype);
      const engine = await load(t.target, dtype, tune, t.options);
      if (onCuda) assert.equal(engine.info.backend, 'cuda');
      try {
        // Twice: the second run replays the decode graphs and reuses the tuned plans.
        for (const pass of [1, 2]) {
          const { worst, failures } = compareRuns(await runRequests(engine, REQUESTS), ref, V, dtype, REQUESTS);
          process.stdout.write(`# ${dtype} tune=${tune} pass ${pass}: worst row error ${fmt(worst)}\n`);
          assert.deepEqual(failures, []);
        }
      } finally {
        engines.splice(engines.indexOf(engine), 1);
        await engine.dispose();
      }
    });
  }
});
