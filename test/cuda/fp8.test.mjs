// FP8 e4m3 cuda engines (`kiln build --target cuda --quantization fp8`, decision 0015: e4m3 weights with a
// scale per matrix, activations quantized per row with a dynamic scale each call; kernels/fp8.cu) against
// the cpu fp8 engine of the same checkpoint, whose scalar kernel is the reference of the format (itself
// checked against an independent float64 model in native/test/fp8.test.ts). The llama fixture and
// scribe-7m, three prompts generated together (prefill of more than 8 rows: quantize kernel + cuBLASLt's
// FP8 GEMM + epilogue; decode of 3 rows: the FP8 GEMV); on the llama fixture, most float32 rows of prompts
// that take the GEMV throughout equal the cpu engine's within 1e-4 (the GEMM's tensor cores accumulate in
// 22 bits on Hopper, so it is not held to that);
// - float32 activations: every generation row within 0.25 relative of the cpu engine's, tokens equal up
//   to a cpu top-1/top-2 margin below 0.5;
// - the same engine with KILN_CUDA_GEMV=0 (decode through the GEMM path too, and with
//   KILN_CUDA_FP8_CHUNK_ROWS=5 prefill in chunks of 5 rows): the same bounds against the
//   GEMV run: a sequence's tokens do not depend on the path, up to near ties;
// - bfloat16 activations: rows within 0.35 of the cpu engine, tokens equal up to a margin of 0.75; its
//   GEMV and GEMM runs within 0.25 / 0.5 of each other.
// Why so loose: both sides quantize the same float32 values by the same formulas, but quantizing
// activations to e4m3 amplifies any float32 difference (summation order, attention) wherever it moves a
// value across a rounding boundary (a step is ~6%), and that spreads through the layers. Measured on the
// CPU by perturbing every fp8 linear's input by 1.2e-7 relative: scribe-7m's context rows moved by 4.5e-2
// (median) and 1.3e-1 (worst), the llama fixture's (K = 64) by 6e-7; rounding the inputs to bfloat16
// instead moved generation rows by up to 8.5e-2 / 1.2e-1 and flipped tokens at top-2 margins up to 0.22.
// A kernel error (a wrong scale, code or index) is O(1).
// Then the accuracy report against the cuda bfloat16 engine (issue 10): logits' relative error on both
// models and scribe-7m's teacher-forced greedy agreement, written to $KILN_RESULTS_DIR/quantized-fp8.md.
// With KILN_CUDA_SUITE_TARGET=cpu the "cuda" engines are cpu engines (a check of the test itself).
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { compareUpToMargin, fixturesDir, fmt, kilnOk, makeTmpDir, markdownTable, onCuda, requirePackage, rowRelativeError, scribeDir, target, topMargin, writeResult } from './helpers.mjs';

const { Engine, Tokenizer } = requirePackage('@kiln/runtime');
const work = makeTmpDir('fp8');
after(() => work.remove());

const MODELS = [
  ['llama fixture', path.join(fixturesDir, 'llama')],
  ['scribe-7m', scribeDir],
];
const NEW_TOKENS = 10;
const FORCED_TOKENS = 32;
const TEXT_PROMPTS = ['And the LORD said unto Moses,', 'In the beginning God', 'And it came to pass, when', 'Blessed are they that'];
const ID_PROMPTS = [[1, 5, 6, 7], [1, 300, 41, 9, 77, 12], [1, 2000, 18], [1, 64, 65, 66, 67, 68, 69, 70]];
const common = ['--max-batch-size', '4', '--max-seq-len', '128', '--gather-context-logits'];
const fp8 = ['--quantization', 'fp8'];
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
/** The fraction of rows within 1e-4: those no e4m3 rounding flip has reached (see above). */
const exactShare = (out, ref, vocab) => {
  const errors = rowErrors(out, ref, vocab);
  return errors.filter((e) => e <= 1e-4).length / errors.length;
};

function assertTokensUpToMargin(out, ref, vocab, minMargin, what) {
  out.forEach((r, i) => {
    const margin = (k) => topMargin(ref[i].generationLogits, k, vocab);
    const c = compareUpToMargin(r.outputIds, ref[i].outputIds, margin, minMargin);
    assert.equal(c.mismatchAt, -1, `${what}, prompt ${i}: token ${c.mismatchAt} differs before a near tie`);
  });
}

/**
 * The reference engine's greedy continuation of each prompt, read back by both engines with context
 * logits: per position, the rows' relative error and whether the fp8 engine's greedy choice agrees.
 */
async function teacherForced(refDir, fp8Dir, prompts) {
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
  await withEngine(fp8Dir, {}, async (engine) => {
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

describe(`fp8 ${target} engines against the cpu fp8 engine, and against bfloat16`, () => {
  const dirs = new Map();
  before(async () => {
    await Promise.all(
      MODELS.map(async ([name, modelDir]) => {
        const checkpoint = path.join(work.dir, `${name}-checkpoint`);
        await kilnOk(['convert', '--model', modelDir, '--output', checkpoint, '--dtype', 'float32']);
        const build = (suffix, flags) => kilnOk(['build', '--checkpoint', checkpoint, '--output', path.join(work.dir, `${name}-${suffix}`), ...flags, ...common]);
        await Promise.all([
          build('cpu', ['--target', 'cpu', ...fp8]),
          build('float32', [...deviceFlags('float32'), ...fp8]),
          build('bfloat16', [...deviceFlags('bfloat16'), ...fp8]),
          build('bfloat16-reference', deviceFlags('bfloat16')),
        ]);
        dirs.set(name, (suffix) => path.join(work.dir, `${name}-${suffix}`));
      }),
    );
  });

  for (const [name] of MODELS) {
    it(`${name}: float32 and bfloat16 activations, GEMV and GEMM paths`, async () => {
      const dir = dirs.get(name);
      const promptIds = [
        Array.from({ length: 12 }, (_, i) => 5 + ((i * 37) % 400)),
        Array.from({ length: 31 }, (_, i) => 3 + ((i * 53) % 450)),
        [7, 9, 11],
      ];
      const cpu = await generate(dir('cpu'), promptIds);
      const vocab = cpu[0].generationLogits.length / cpu[0].outputIds.length;
      const f32 = await generate(dir('float32'), promptIds);
      // KILN_CUDA_FP8_CHUNK_ROWS=5: the GEMM path's rows in several chunks (prompts of 12 and 31 tokens).
      const f32Gemm = await generate(dir('float32'), promptIds, { KILN_CUDA_GEMV: '0', KILN_CUDA_FP8_CHUNK_ROWS: '5' });
      const bf16 = await generate(dir('bfloat16'), promptIds);
      const bf16Gemm = await generate(dir('bfloat16'), promptIds, { KILN_CUDA_GEMV: '0' });
      const f32Error = worstRow(f32, cpu, vocab);
      const pathError = worstRow(f32Gemm, f32, vocab);
      const bf16Error = worstRow(bf16, cpu, vocab);
      const bf16PathError = worstRow(bf16Gemm, bf16, vocab);
      process.stdout.write(
        `# ${name} fp8: float32 vs cpu worst row ${fmt(f32Error)}, GEMV vs GEMM ${fmt(pathError)}; bfloat16 vs cpu ${fmt(bf16Error)}, GEMV vs GEMM ${fmt(bf16PathError)}\n`,
      );
      results.set(name, { f32Error, pathError, bf16Error, bf16PathError });
      // The sharp check: on the llama fixture (K = 64: few activations, so a rounding flip is rare) most
      // float32 rows of the FP8 GEMV are equal to the cpu reference's to float32 summation order. Only the
      // GEMV's: Hopper's FP8 tensor cores accumulate in 22 bits (13 of mantissa; what DeepSeek-V3 and
      // SageAttention2 measured), so cuBLASLt's FP8 GEMM is not float32-exact, and the first GPU run found
      // none of its rows within 1e-4 (nor 73% of the rows above, whose prefill took the GEMM). Here three
      // prompts of 8 tokens in all: their prefill fits the GEMV too. (The GEMM path keeps the bounds below.)
      const shortPrompts = [[7, 9, 11], [5, 6], [300, 41, 9]];
      const gemvOnly = exactShare(await generate(dir('float32'), shortPrompts), await generate(dir('cpu'), shortPrompts), vocab);
      const shares = [exactShare(f32, cpu, vocab), exactShare(f32Gemm, cpu, vocab)];
      process.stdout.write(
        `# ${name} fp8: float32 rows within 1e-4 of the cpu engine: GEMV throughout ${gemvOnly.toFixed(2)}; GEMM prefill ${shares[0].toFixed(2)}, GEMM throughout ${shares[1].toFixed(2)}\n`,
      );
      if (name === 'llama fixture') {
        assert.ok(gemvOnly >= 0.5, `float32 rows of the GEMV within 1e-4 of the cpu engine: ${gemvOnly}`);
      }
      assert.ok(f32Error <= 0.25, `float32: worst row ${f32Error}`);
      assertTokensUpToMargin(f32, cpu, vocab, 0.5, 'float32');
      assert.ok(pathError <= 0.25, `float32, GEMV against GEMM: worst row ${pathError}`);
      assertTokensUpToMargin(f32Gemm, f32, vocab, 0.5, 'float32 GEMM path');
      assert.ok(bf16Error <= 0.35, `bfloat16: worst row ${bf16Error}`);
      assertTokensUpToMargin(bf16, cpu, vocab, 0.75, 'bfloat16');
      assert.ok(bf16PathError <= 0.25, `bfloat16, GEMV against GEMM: worst row ${bf16PathError}`);
      assertTokensUpToMargin(bf16Gemm, bf16, vocab, 0.5, 'bfloat16 GEMM path');
    });
  }

  // One sequence at a time a bfloat16 engine's decode takes the fused linears (kernels/gemv.cu with
  // Fp8Weights: the norm, x quantized once per block, the FP8 GEMV and the SwiGLU / rope + KV store
  // epilogue as one kernel); KILN_CUDA_FUSED_LINEAR=0 runs the separate kernels (add_rms_norm, gemvFp8,
  // then the epilogue's kernel). Both quantize the same bfloat16 normed rows by the same formulas; the
  // separate kernels round the GEMV's product to bfloat16 before the epilogue and the fused one does not,
  // which can move an e4m3 code of the next linear's input (bounds as for the GEMV against the GEMM). A
  // wrong scale, code or feature is O(1).
  for (const [name] of MODELS) {
    it(`${name}, bfloat16, one sequence: fused FP8 linears against the separate kernels`, async () => {
      const dir = dirs.get(name);
      const prompts = [[7, 9, 11], [1, 300, 41, 9, 77, 12]];
      const solo = async (env) => {
        const out = [];
        for (const p of prompts) out.push(...(await generate(dir('bfloat16'), [p], env)));
        return out;
      };
      const fused = await solo({});
      const separate = await solo({ KILN_CUDA_FUSED_LINEAR: '0' });
      const vocab = fused[0].generationLogits.length / fused[0].outputIds.length;
      const errors = rowErrors(fused, separate, vocab).sort((a, b) => a - b);
      const median = errors[Math.floor(errors.length / 2)];
      const worst = errors[errors.length - 1];
      process.stdout.write(`# ${name} fp8 bfloat16, one sequence: fused vs separate kernels, rows median ${fmt(median)}, worst ${fmt(worst)}\n`);
      // Measured (H200, session 13): median 4.5e-8 (llama fixture) and 0 (scribe-7m).
      assert.ok(median <= 1e-3, `fused against separate: median row ${median}`);
      assert.ok(worst <= 0.25, `fused against separate: worst row ${worst}`);
      assertTokensUpToMargin(fused, separate, vocab, 0.5, 'fused FP8 linears');
    });
  }

  it('accuracy against the bfloat16 engine (issue 10), written to quantized-fp8.md', async () => {
    const rows = [];
    for (const [name] of MODELS) {
      const dir = dirs.get(name);
      const r = await teacherForced(dir('bfloat16-reference'), dir('bfloat16'), name === 'scribe-7m' ? TEXT_PROMPTS : ID_PROMPTS);
      const paths = results.get(name);
      rows.push([
        name,
        fmt(r.median),
        fmt(r.worst),
        `${r.same}/${r.total} (${((100 * r.same) / r.total).toFixed(1)}%)`,
        paths ? `${fmt(paths.f32Error)} / ${fmt(paths.bf16Error)}` : 'not run',
        paths ? `${fmt(paths.pathError)} / ${fmt(paths.bf16PathError)}` : 'not run',
      ]);
      process.stdout.write(`# ${name} fp8 vs bfloat16: logits median ${fmt(r.median)}, worst ${fmt(r.worst)}; greedy ${r.same}/${r.total}\n`);
      // A broken kernel agrees on almost nothing; e4m3's 3 mantissa bits cost these tiny models some
      // positions (cpu, against float32: 66/96 llama fixture, 84/96 scribe-7m; decision 0015).
      assert.ok(r.same / r.total >= (name === 'scribe-7m' ? 0.8 : 0.55), `${name}: greedy agreement ${r.same}/${r.total}`);
    }
    const file = writeResult(
      'quantized-fp8.md',
      [
        `# FP8 (e4m3) ${target} engines against the ${target} bfloat16 engine`,
        '',
        `Weights float8_e4m3fn with one scale per matrix (the LM head kept in the engine dtype), activations quantized per row each call (decision 0015). ` +
          `Teacher-forced: the bfloat16 engine's greedy continuation (${FORCED_TOKENS} tokens per prompt) read back by both engines; logits error per position ` +
          `is ||fp8 - bf16|| / ||bf16|| over the vocabulary. Issue 10 asks scribe-7m's agreement to be >= 95%.`,
        '',
        markdownTable(
          ['model', 'logits rel. error (median)', 'worst', 'greedy agreement', `vs cpu fp8 (f32 / bf16 act.)`, 'GEMV vs GEMM (f32 / bf16)'],
          rows,
        ),
        '',
      ].join('\n'),
    );
    process.stdout.write(`# wrote ${file}\n`);
  });
});
