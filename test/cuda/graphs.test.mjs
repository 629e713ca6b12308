// Decode-step CUDA graphs and the small-batch GEMV against the plain path, end to end through `kiln
// generate`: a replayed graph must give bit-for-bit the logits of the same kernels launched one by one
// (KILN_CUDA_GRAPHS=0); the GEMV (16-bit engines, up to 8 rows) sums in another order than cuBLASLt
// (KILN_CUDA_GEMV=0), so its logits agree to bfloat16 rounding and its greedy tokens while the
// reference's margin is clear. Also a batch of 8 concurrent decodes (graph of batch 8) against solo runs,
// and the fused linears of bfloat16 engines (decision 0018) against their separate kernels.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { convertAndBuild, fixturesDir, kilnOk, makeTmpDir, onCuda, readSafetensors, requirePackage, worstRowError } from './helpers.mjs';

const work = makeTmpDir('graphs');
after(() => work.remove());
const checkpoints = new Map();
const reference = JSON.parse(fs.readFileSync(path.join(fixturesDir, 'llama', 'reference.json'), 'utf8'));
const prompt = reference.prompts[2].input_ids;

// The prompt's 19-token prefill is a GEMM of 16+ rows, whose cuBLASLt algorithm each process would choose
// by timing (decision 0021) and may choose differently: these runs compare processes bit for bit, so they
// take cuBLASLt's first heuristic result (test/cuda/gemm-tune.test.mjs covers tuned GEMMs with graphs).
async function generate(engineDir, name, env) {
  const logitsFile = path.join(work.dir, `${name}.safetensors`);
  const run = await kilnOk(
    ['generate', '--engine', engineDir, '--input-ids', prompt.join(','), '--max-tokens', '16', '--ignore-eos', '--json', '--logits-out', logitsFile],
    { env: { KILN_CUDA_GEMM_TUNE: '0', ...env } },
  );
  const lines = run.stdout.trimEnd().split('\n');
  return { ids: JSON.parse(lines[lines.length - 1]).outputIds, logits: readSafetensors(logitsFile).get('generation_logits').data };
}

describe('decode graphs and the GEMV (cuda)', { skip: !onCuda && 'cuda only' }, () => {
  it('a float32 engine: graph replay equals launching the kernels one by one, bit for bit', async () => {
    const engine = await convertAndBuild({ workDir: work.dir, modelDir: path.join(fixturesDir, 'llama'), name: 'llama', dtype: 'float32', buildFlags: ['--gather-context-logits'], checkpoints });
    const graphs = await generate(engine, 'f32-graphs', {});
    const eager = await generate(engine, 'f32-eager', { KILN_CUDA_GRAPHS: '0' });
    assert.deepEqual(graphs.ids, eager.ids);
    assert.deepEqual(Array.from(graphs.logits), Array.from(eager.logits));
    assert.deepEqual(graphs.ids, reference.prompts[2].greedy);
  });

  it('a bfloat16 engine: graphs bit for bit; the GEMV within bfloat16 rounding of cuBLASLt', async () => {
    const engine = await convertAndBuild({ workDir: work.dir, modelDir: path.join(fixturesDir, 'llama'), name: 'llama', dtype: 'bfloat16', buildFlags: ['--gather-context-logits'], checkpoints });
    const shipped = await generate(engine, 'bf16-graphs', {});
    const eager = await generate(engine, 'bf16-eager', { KILN_CUDA_GRAPHS: '0' });
    const cublas = await generate(engine, 'bf16-cublas', { KILN_CUDA_GRAPHS: '0', KILN_CUDA_GEMV: '0' });
    assert.deepEqual(shipped.ids, eager.ids);
    assert.deepEqual(Array.from(shipped.logits), Array.from(eager.logits));
    // Rows are comparable while the tokens before them agree.
    let same = 0;
    while (same < 16 && eager.ids[same] === cublas.ids[same]) same++;
    const rows = Math.min(16, same + 1);
    const vocab = eager.logits.length / 16;
    const error = worstRowError(eager.logits.subarray(0, rows * vocab), cublas.logits, 0, vocab, rows);
    assert.ok(error < 1e-2, `GEMV vs cuBLASLt worst row error ${error}`);
  });

  // Decision 0018: bfloat16 linears take their norm and their rope + KV store, SwiGLU or residual add;
  // decode rows run them as one gemvFused kernel. Against the same engine's separate kernels
  // (KILN_CUDA_FUSED_LINEAR=0) only the norm's sum of squares is summed in another order.
  // The fixtures cover: llama (RMSNorm, SwiGLU), qwen2 (QKV bias), gemma (RMSNorm weight offset 1),
  // gptj (interleaved rope, a parallel block), phi (partial rotary, LayerNorm, a parallel block: the MLP's
  // input after v in the fused product), falcon (multi-query, a parallel block).
  for (const name of ['llama', 'qwen2', 'gemma', 'gptj', 'phi', 'falcon']) {
    it(`${name}, bfloat16: fused linears within bfloat16 rounding of the separate kernels`, async () => {
      const fixture = JSON.parse(fs.readFileSync(path.join(fixturesDir, name, 'reference.json'), 'utf8'));
      const ids = fixture.prompts[fixture.prompts.length - 1].input_ids;
      const engine = await convertAndBuild({ workDir: work.dir, modelDir: path.join(fixturesDir, name), name, dtype: 'bfloat16', buildFlags: ['--gather-context-logits'], checkpoints });
      const run = async (tag, env) => {
        const logitsFile = path.join(work.dir, `${name}-${tag}.safetensors`);
        const out = await kilnOk(
          ['generate', '--engine', engine, '--input-ids', ids.join(','), '--max-tokens', '12', '--ignore-eos', '--json', '--logits-out', logitsFile],
          { env },
        );
        const lines = out.stdout.trimEnd().split('\n');
        return { ids: JSON.parse(lines[lines.length - 1]).outputIds, logits: readSafetensors(logitsFile).get('generation_logits').data };
      };
      const fused = await run('fused', {});
      const separate = await run('separate', { KILN_CUDA_FUSED_LINEAR: '0' });
      let same = 0;
      while (same < 12 && fused.ids[same] === separate.ids[same]) same++;
      const rows = Math.min(12, same + 1);
      const vocab = fused.logits.length / 12;
      const error = worstRowError(fused.logits.subarray(0, rows * vocab), separate.logits, 0, vocab, rows);
      assert.ok(same >= 8, `${name}: tokens agree for ${same} of 12 (fused ${fused.ids}, separate ${separate.ids})`);
      assert.ok(error < 1e-2, `${name}: fused vs separate kernels worst row error ${error}`);
    });
  }

  it('3 concurrent decodes through the fused linears (rows 3) give each request its solo tokens', async () => {
    const engineDir = await convertAndBuild({ workDir: work.dir, modelDir: path.join(fixturesDir, 'llama'), name: 'llama', dtype: 'bfloat16', buildFlags: ['--gather-context-logits'], checkpoints });
    const { Engine } = requirePackage('@kiln/runtime');
    const engine = await Engine.load(engineDir);
    try {
      const prompts = Array.from({ length: 3 }, (_, i) => prompt.slice(0, 4 + 3 * i));
      const solo = [];
      for (const p of prompts) solo.push((await engine.generate(p, { maxTokens: 12, ignoreEos: true })).outputIds);
      const together = await Promise.all(prompts.map((p) => engine.generate(p, { maxTokens: 12, ignoreEos: true })));
      together.forEach((r, i) => assert.deepEqual(r.outputIds, solo[i], `request ${i}`));
    } finally {
      await engine.dispose();
    }
  });

  it('8 concurrent decodes (a batch-8 graph) give each request its solo tokens', async () => {
    const engineDir = await convertAndBuild({
      workDir: work.dir,
      modelDir: path.join(fixturesDir, 'llama'),
      name: 'llama-b8',
      dtype: 'float32',
      buildFlags: ['--max-batch-size', '8', '--max-seq-len', '64'],
      checkpoints,
    });
    const { Engine } = requirePackage('@kiln/runtime');
    const engine = await Engine.load(engineDir);
    try {
      const prompts = Array.from({ length: 8 }, (_, i) => prompt.slice(0, 3 + 2 * i));
      const solo = [];
      for (const p of prompts) solo.push((await engine.generate(p, { maxTokens: 12, ignoreEos: true })).outputIds);
      const together = await Promise.all(prompts.map((p) => engine.generate(p, { maxTokens: 12, ignoreEos: true })));
      together.forEach((r, i) => assert.deepEqual(r.outputIds, solo[i], `request ${i}`));
    } finally {
      await engine.dispose();
    }
  });
});
