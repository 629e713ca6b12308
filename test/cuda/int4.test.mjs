// Weight-only int4 cuda engines (`kiln build --target cuda --quantization int4 [--group-size G]`, decision
// 0014: 4-bit codes two a byte with a bfloat16 scale per row and group of G input features;
// kernels/gemv_int4.cu) against the cpu int4 engine of the same checkpoint and group size, whose kernels
// are the reference of the format (every CPU kernel set equals dequantize-then-multiply; native/test/
// kernels.test.ts). The llama fixture (group 32: its K is 64 and 128) and scribe-7m (group 128, the cuda
// default, issue 10), three prompts generated together (prefill of more than 8 rows: the matrix
// dequantized for cuBLASLt; decode of 3 rows: the int4 GEMV):
// - float32 activations: every generation row within 1e-4 relative of the cpu engine's (both compute with
//   the same exactly dequantized weights; only float32 summation order differs), tokens equal up to a cpu
//   top-1/top-2 margin of 0.01;
// - the same engine with KILN_CUDA_GEMV=0 (decode through the dequantized GEMM too): rows within 1e-5;
// - bfloat16 activations: rows within 3e-2 of the cpu engine (as for int8: bfloat16 activations and, on
//   the GEMM path, weights rounded to bfloat16 by at most 2^-9), tokens equal up to a margin of 0.1.
// Then the accuracy report against the cuda bfloat16 engine (issue 10): logits' relative error on both
// models and scribe-7m's teacher-forced greedy agreement, written to $KILN_RESULTS_DIR/quantized-int4.md.
// The agreement is held to regression bars, not issue 10's 95%: on the CPU, int4 group 32 agrees with
// float32 on 89/128 scribe-7m positions and raises its perplexity 39% (decision 0014), a model this small
// being unusually sensitive to 4-bit weights.
// With KILN_CUDA_SUITE_TARGET=cpu the "cuda" engines are cpu engines (a check of the test itself).
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { compareUpToMargin, fixturesDir, fmt, kilnOk, makeTmpDir, markdownTable, onCuda, requirePackage, rowRelativeError, scribeDir, target, topMargin, writeResult } from './helpers.mjs';

// The cpu int4 engine is the reference of W4A16 maths: keep its linears' inputs in float32 (by default
// they are quantized to int8 blocks as llama.cpp's Q4_0 x Q8_0). Read when an engine loads.
process.env.KILN_CPU_INT4_ACTIVATIONS = 'float32';
// int4 builds keep the first layer and the LM head at int8 (decision 0014): those keep float inputs too.
process.env.KILN_CPU_INT8_ACTIVATIONS = 'float';

const { Engine, Tokenizer } = requirePackage('@kiln/runtime');
const work = makeTmpDir('int4');
after(() => work.remove());

// [name, model folder, group size]
const MODELS = [
  ['llama fixture', path.join(fixturesDir, 'llama'), 32],
  ['scribe-7m', scribeDir, 128],
];
const NEW_TOKENS = 10;
const FORCED_TOKENS = 32;
const TEXT_PROMPTS = ['And the LORD said unto Moses,', 'In the beginning God', 'And it came to pass, when', 'Blessed are they that'];
const ID_PROMPTS = [[1, 5, 6, 7], [1, 300, 41, 9, 77, 12], [1, 2000, 18], [1, 64, 65, 66, 67, 68, 69, 70]];
const common = ['--max-batch-size', '4', '--max-seq-len', '128', '--gather-context-logits'];
const int4 = (group) => ['--quantization', 'int4', '--group-size', String(group)];
const deviceFlags = (dtype) => (onCuda ? ['--target', 'cuda', '--dtype', dtype] : ['--target', 'cpu']);
const results = new Map();

async function withEngine(engineDir, env, fn) {
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  try {
    const engine = await Engine.load(engineDir, { numThreads: 2 });
    try {
      return await fn(engine);
    } finally {
      await engine.executor.shutdown();
      await engine.dispose();
    }
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

/** Greedy generations of the prompts, all at once, with their generation logits. */
const generate = (engineDir, promptIds, env = {}) =>
  withEngine(engineDir, env, (engine) =>
    Promise.all(promptIds.map((inputIds) => engine.executor.generate({ inputIds, maxTokens: NEW_TOKENS, ignoreEos: true, returnGenerationLogits: true }))),
  );

/** Generation row errors of `out` against `ref` over the rows where both chose the same tokens so far. */
function rowErrors(out, ref, vocab) {
  const errors = [];
  out.forEach((result, i) => {
    const rows = Math.min(result.outputIds.length, ref[i].outputIds.length);
    for (let k = 0; k < rows; k++) {
      errors.push(rowRelativeError(result.generationLogits, k, ref[i].generationLogits, k, vocab));
      if (result.outputIds[k] !== ref[i].outputIds[k]) break;
    }
  });
  return errors;
}
const worstRow = (out, ref, vocab) => Math.max(...rowErrors(out, ref, vocab));

function assertTokensUpToMargin(out, ref, vocab, minMargin, what) {
  out.forEach((r, i) => {
    const margin = (k) => topMargin(ref[i].generationLogits, k, vocab);
    const c = compareUpToMargin(r.outputIds, ref[i].outputIds, margin, minMargin);
    assert.equal(c.mismatchAt, -1, `${what}, prompt ${i}: token ${c.mismatchAt} differs before a near tie`);
  });
}

/**
 * The reference engine's greedy continuation of each prompt, read back by both engines with context
 * logits: per position, the rows' relative error and whether the int4 engine's greedy choice agrees.
 */
async function teacherForced(refDir, int4Dir, prompts) {
  const errors = [];
  let same = 0;
  let total = 0;
  const forced = await withEngine(refDir, {}, async (engine) => {
    const tokenizer = typeof prompts[0] === 'string' ? await Tokenizer.load(refDir) : undefined;
    const out = [];
    for (const prompt of prompts) {
      const ids = tokenizer ? tokenizer.encode(prompt) : prompt.map((id) => id % engine.vocabSize);
      const { outputIds } = await engine.generate(ids, { maxTokens: FORCED_TOKENS, ignoreEos: true });
      const sequence = [...ids, ...outputIds.slice(0, -1)];
      const { contextLogits } = await engine.generate(sequence, { maxTokens: 1, ignoreEos: true, returnContextLogits: true });
      out.push({ ids, outputIds, contextLogits, vocab: engine.vocabSize });
    }
    return out;
  });
  await withEngine(int4Dir, {}, async (engine) => {
    for (const { ids, outputIds, contextLogits: ref, vocab } of forced) {
      const { contextLogits } = await engine.generate([...ids, ...outputIds.slice(0, -1)], { maxTokens: 1, ignoreEos: true, returnContextLogits: true });
      for (let j = 0; j < outputIds.length; j++) {
        const row = ids.length - 1 + j;
        errors.push(rowRelativeError(contextLogits, row, ref, row, vocab));
        let best = row * vocab;
        for (let v = row * vocab; v < (row + 1) * vocab; v++) if (contextLogits[v] > contextLogits[best]) best = v;
        same += best - row * vocab === outputIds[j] ? 1 : 0;
        total++;
      }
    }
  });
  errors.sort((a, b) => a - b);
  return { same, total, median: errors[Math.floor(errors.length / 2)], worst: errors[errors.length - 1] };
}

// Greedy agreement bars of the report (regression bars; see the header).
const BARS = { 'llama fixture': 0.3, 'scribe-7m': 0.45 };

describe(`int4 ${target} engines against the cpu int4 engine, and against bfloat16`, () => {
  const dirs = new Map();
  before(async () => {
    await Promise.all(
      MODELS.map(async ([name, modelDir, group]) => {
        const checkpoint = path.join(work.dir, `${name}-checkpoint`);
        await kilnOk(['convert', '--model', modelDir, '--output', checkpoint, '--dtype', 'float32']);
        const build = (suffix, flags) => kilnOk(['build', '--checkpoint', checkpoint, '--output', path.join(work.dir, `${name}-${suffix}`), ...flags, ...common]);
        await Promise.all([
          build('cpu', ['--target', 'cpu', ...int4(group)]),
          build('float32', [...deviceFlags('float32'), ...int4(group)]),
          build('bfloat16', [...deviceFlags('bfloat16'), ...int4(group)]),
          build('bfloat16-reference', deviceFlags('bfloat16')),
        ]);
        dirs.set(name, (suffix) => path.join(work.dir, `${name}-${suffix}`));
      }),
    );
  });

  for (const [name, , group] of MODELS) {
    it(`${name} (group ${group}): float32 and bfloat16 activations, GEMV and dequantized-GEMM paths`, async () => {
      const dir = dirs.get(name);
      const promptIds = [
        Array.from({ length: 12 }, (_, i) => 5 + ((i * 37) % 400)),
        Array.from({ length: 31 }, (_, i) => 3 + ((i * 53) % 450)),
        [7, 9, 11],
      ];
      const cpu = await generate(dir('cpu'), promptIds);
      const vocab = cpu[0].generationLogits.length / cpu[0].outputIds.length;
      const f32 = await generate(dir('float32'), promptIds);
      const f32Gemm = await generate(dir('float32'), promptIds, { KILN_CUDA_GEMV: '0' });
      const bf16 = await generate(dir('bfloat16'), promptIds);
      const bf16Gemm = await generate(dir('bfloat16'), promptIds, { KILN_CUDA_GEMV: '0' });
      const f32Error = worstRow(f32, cpu, vocab);
      const pathError = worstRow(f32Gemm, f32, vocab);
      const bf16Error = worstRow(bf16, cpu, vocab);
      const bf16PathError = worstRow(bf16Gemm, bf16, vocab);
      process.stdout.write(
        `# ${name} int4 g${group}: float32 vs cpu worst row ${fmt(f32Error)}, GEMV vs GEMM ${fmt(pathError)}; bfloat16 vs cpu ${fmt(bf16Error)}, GEMV vs GEMM ${fmt(bf16PathError)}\n`,
      );
      results.set(name, { f32Error, pathError, bf16Error, bf16PathError });
      assert.ok(f32Error <= 1e-4, `float32: worst row ${f32Error}`);
      assertTokensUpToMargin(f32, cpu, vocab, 0.01, 'float32');
      assert.ok(pathError <= 1e-5, `float32, GEMV against the dequantized GEMM: worst row ${pathError}`);
      assertTokensUpToMargin(f32Gemm, f32, vocab, 0.01, 'float32 GEMM path');
      assert.ok(bf16Error <= 3e-2, `bfloat16: worst row ${bf16Error}`);
      assertTokensUpToMargin(bf16, cpu, vocab, 0.1, 'bfloat16');
      assert.ok(bf16PathError <= 3e-2, `bfloat16, GEMV against the dequantized GEMM: worst row ${bf16PathError}`);
      assertTokensUpToMargin(bf16Gemm, bf16, vocab, 0.1, 'bfloat16 GEMM path');
    });

    // One sequence at a time a bfloat16 engine's decode runs the batch-1 kernels: the fused linears
    // (kernels/gemv.cu) and, for o and down, the split-K GEMV over int4 blocks (gemvInt4 with
    // KILN_CUDA_QUANTIZED_GEMV_SPLIT=0: run the file both ways). Same bounds against the cpu engine as the
    // batched run above.
    it(`${name} (group ${group}), bfloat16, one sequence at a time: within bfloat16 rounding of the cpu engine`, async () => {
      const dir = dirs.get(name);
      const prompts = [[7, 9, 11], [1, 300, 41, 9, 77, 12]];
      const cpu = await generate(dir('cpu'), prompts);
      const vocab = cpu[0].generationLogits.length / cpu[0].outputIds.length;
      const solo = [];
      for (const p of prompts) solo.push(...(await generate(dir('bfloat16'), [p])));
      const error = worstRow(solo, cpu, vocab);
      process.stdout.write(`# ${name} int4 g${group} bfloat16, one sequence: vs cpu worst row ${fmt(error)}\n`);
      assert.ok(error <= 3e-2, `bfloat16, one sequence: worst row ${error}`);
      assertTokensUpToMargin(solo, cpu, vocab, 0.1, 'bfloat16, one sequence');
    });
  }

  it('accuracy against the bfloat16 engine (issue 10), written to quantized-int4.md', async () => {
    const rows = [];
    for (const [name, , group] of MODELS) {
      const dir = dirs.get(name);
      const r = await teacherForced(dir('bfloat16-reference'), dir('bfloat16'), name === 'scribe-7m' ? TEXT_PROMPTS : ID_PROMPTS);
      const paths = results.get(name);
      rows.push([
        name,
        String(group),
        fmt(r.median),
        fmt(r.worst),
        `${r.same}/${r.total} (${((100 * r.same) / r.total).toFixed(1)}%)`,
        paths ? `${fmt(paths.f32Error)} / ${fmt(paths.bf16Error)}` : 'not run',
        paths ? `${fmt(paths.pathError)} / ${fmt(paths.bf16PathError)}` : 'not run',
      ]);
      process.stdout.write(`# ${name} int4 g${group} vs bfloat16: logits median ${fmt(r.median)}, worst ${fmt(r.worst)}; greedy ${r.same}/${r.total}\n`);
      // Regression bars: a broken kernel agrees on almost nothing. Measured with the cpu engines against
      // float32 (KILN_CUDA_SUITE_TARGET=cpu): see the report.
      assert.ok(r.same / r.total >= BARS[name], `${name}: greedy agreement ${r.same}/${r.total}`);
    }
    const file = writeResult(
      'quantized-int4.md',
      [
        `# int4 weight-only ${target} engines against the ${target} bfloat16 engine`,
        '',
        `Weights int4 with a bfloat16 scale per row and group (decision 0014; the LM head included), activations bfloat16. ` +
          `Teacher-forced: the bfloat16 engine's greedy continuation (${FORCED_TOKENS} tokens per prompt) read back by both engines; logits error per position ` +
          `is ||int4 - bf16|| / ||bf16|| over the vocabulary. Issue 10 asks scribe-7m's agreement to be >= 95%.`,
        '',
        markdownTable(
          ['model', 'group', 'logits rel. error (median)', 'worst', 'greedy agreement', 'vs cpu int4 (f32 / bf16 act.)', 'GEMV vs GEMM (f32 / bf16)'],
          rows,
        ),
        '',
      ].join('\n'),
    );
    process.stdout.write(`# wrote ${file}\n`);
  });
});
