// Weight-only int8 cuda engines (`kiln build --target cuda --quantization int8`: int8 codes with a scale
// per output channel; kernels/gemv_int8.cu) against the cpu int8 engine of the same checkpoint, whose
// kernels are the reference of the format (codes widened exactly, the scale applied to each finished
// sum). The llama fixture and scribe-7m, three prompts generated together (prefill of more than 8 rows:
// codes widened for cuBLASLt; decode of 3 rows: the int8 GEMV):
// - float32 activations: every generation row within 1e-4 relative of the cpu engine's, tokens equal;
// - the same engine with KILN_CUDA_GEMV=0 (decode through the widened codes too): rows within 1e-5;
// - bfloat16 activations: rows within 3e-2, tokens equal up to a cpu top-1/top-2 margin below 0.1.
// With KILN_CUDA_SUITE_TARGET=cpu the "cuda" engines are cpu engines (a check of the test itself).
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { compareUpToMargin, fixturesDir, fmt, kilnOk, makeTmpDir, onCuda, requirePackage, rowRelativeError, scribeDir, target, topMargin } from './helpers.mjs';

// The cpu int8 engine is the reference of W8A16 maths: keep its linears' inputs in float (by default
// they are quantized to int8 codes from 2 rows on: decision 0017). Read when an engine loads.
process.env.KILN_CPU_INT8_ACTIVATIONS = 'float';

const { Engine } = requirePackage('@kiln/runtime');
const work = makeTmpDir('int8');
after(() => work.remove());

const MODELS = [
  ['llama fixture', path.join(fixturesDir, 'llama')],
  ['scribe-7m', scribeDir],
];
const NEW_TOKENS = 10;
const common = ['--quantization', 'int8', '--max-batch-size', '4', '--max-seq-len', '128'];
const deviceFlags = (dtype) => (onCuda ? ['--target', 'cuda', '--dtype', dtype] : ['--target', 'cpu']);

/** Greedy generations of the prompts, all at once, with their generation logits. */
async function generate(engineDir, promptIds, env = {}) {
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  try {
    const engine = await Engine.load(engineDir, { numThreads: 2 });
    try {
      return await Promise.all(
        promptIds.map((inputIds) => engine.executor.generate({ inputIds, maxTokens: NEW_TOKENS, ignoreEos: true, returnGenerationLogits: true })),
      );
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

/** Worst generation row error of `out` against `ref` over the rows where both chose the same tokens so far. */
function worstRow(out, ref, vocab) {
  let worst = 0;
  out.forEach((result, i) => {
    const rows = Math.min(result.outputIds.length, ref[i].outputIds.length);
    for (let k = 0; k < rows; k++) {
      worst = Math.max(worst, rowRelativeError(result.generationLogits, k, ref[i].generationLogits, k, vocab));
      if (result.outputIds[k] !== ref[i].outputIds[k]) break;
    }
  });
  return worst;
}

describe(`int8 weight-only ${target} engines against the cpu int8 engine`, () => {
  const dirs = new Map();
  before(async () => {
    await Promise.all(
      MODELS.map(async ([name, modelDir]) => {
        const checkpoint = path.join(work.dir, `${name}-checkpoint`);
        await kilnOk(['convert', '--model', modelDir, '--output', checkpoint, '--dtype', 'float32']);
        const build = (suffix, flags) => kilnOk(['build', '--checkpoint', checkpoint, '--output', path.join(work.dir, `${name}-${suffix}`), ...flags, ...common]);
        await Promise.all([build('cpu', ['--target', 'cpu']), build('float32', deviceFlags('float32')), build('bfloat16', deviceFlags('bfloat16'))]);
        dirs.set(name, (suffix) => path.join(work.dir, `${name}-${suffix}`));
      }),
    );
  });

  for (const [name] of MODELS) {
    it(`${name}: float32 and bfloat16 activations, GEMV and widened paths`, async () => {
      const dir = dirs.get(name);
      const promptIds = [
        Array.from({ length: 12 }, (_, i) => 5 + ((i * 37) % 400)),
        Array.from({ length: 31 }, (_, i) => 3 + ((i * 53) % 450)),
        [7, 9, 11],
      ];
      const cpu = await generate(dir('cpu'), promptIds);
      const vocab = cpu[0].generationLogits.length / cpu[0].outputIds.length;
      const f32 = await generate(dir('float32'), promptIds);
      const f32Widened = await generate(dir('float32'), promptIds, { KILN_CUDA_GEMV: '0' });
      const bf16 = await generate(dir('bfloat16'), promptIds);
      f32.forEach((r, i) => assert.deepEqual(r.outputIds, cpu[i].outputIds, `float32, prompt ${i}: tokens`));
      const f32Error = worstRow(f32, cpu, vocab);
      assert.ok(f32Error <= 1e-4, `float32: worst row ${f32Error}`);
      const pathError = worstRow(f32Widened, f32, vocab);
      assert.ok(pathError <= 1e-5, `GEMV against widened codes: worst row ${pathError}`);
      const bf16Error = worstRow(bf16, cpu, vocab);
      assert.ok(bf16Error <= 3e-2, `bfloat16: worst row ${bf16Error}`);
      bf16.forEach((r, i) => {
        const margin = (k) => topMargin(cpu[i].generationLogits, k, vocab);
        const c = compareUpToMargin(r.outputIds, cpu[i].outputIds, margin, 0.1);
        assert.equal(c.mismatchAt, -1, `bfloat16, prompt ${i}: token ${c.mismatchAt} differs before a near tie`);
      });
      process.stdout.write(`# ${name} int8: float32 worst row ${fmt(f32Error)}, GEMV vs widened ${fmt(pathError)}, bfloat16 ${fmt(bf16Error)}\n`);
    });

    // One sequence at a time a bfloat16 engine's decode takes the fused linears (kernels/gemv.cu: the norm,
    // the int8 GEMV and the SwiGLU / rope + KV store epilogue as one kernel); KILN_CUDA_FUSED_LINEAR=0 runs
    // the separate kernels (add_rms_norm, the GEMV, the epilogue's kernel), which round the product to
    // bfloat16 before the epilogue: bfloat16 rounding apart, the same sums.
    it(`${name}, bfloat16, one sequence: fused int8 linears against the separate kernels`, async () => {
      const dir = dirs.get(name);
      const prompts = [[7, 9, 11], [1, 300, 41, 9, 77, 12]];
      const solo = async (env) => {
        const out = [];
        for (const p of prompts) out.push(...(await generate(dir('bfloat16'), [p], env)));
        return out;
      };
      const fused = await solo({});
      const separate = await solo({ KILN_CUDA_FUSED_LINEAR: '0' });
      const cpu = await generate(dir('cpu'), prompts);
      const vocab = fused[0].generationLogits.length / fused[0].outputIds.length;
      const error = worstRow(fused, separate, vocab);
      const cpuError = worstRow(fused, cpu, vocab);
      process.stdout.write(`# ${name} int8 bfloat16, one sequence: fused vs separate kernels, worst row ${fmt(error)}; vs cpu ${fmt(cpuError)}\n`);
      // Against the cpu engine, as the batched bfloat16 run above (o and down take the split-K GEMV over
      // int8 codes here, or gemvInt8 with KILN_CUDA_QUANTIZED_GEMV_SPLIT=0: run the file both ways).
      assert.ok(cpuError <= 3e-2, `one sequence against the cpu engine: worst row ${cpuError}`);
      fused.forEach((r, i) => {
        const margin = (k) => topMargin(cpu[i].generationLogits, k, vocab);
        const c = compareUpToMargin(r.outputIds, cpu[i].outputIds, margin, 0.1);
        assert.equal(c.mismatchAt, -1, `one sequence against the cpu engine, prompt ${i}: token ${c.mismatchAt} differs before a near tie`);
      });
      assert.ok(error <= 3e-2, `fused against separate: worst row ${error}`);
      fused.forEach((r, i) => {
        const margin = (k) => topMargin(separate[i].generationLogits, k, vocab);
        const c = compareUpToMargin(r.outputIds, separate[i].outputIds, margin, 0.1);
        assert.equal(c.mismatchAt, -1, `prompt ${i}: token ${c.mismatchAt} differs before a near tie`);
      });
    });
  }
});
