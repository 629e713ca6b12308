// Tensor and pipeline parallelism on every vendored fixture and scribe-7m (issue 11): each converted
// (float32) whole and with --tp-size 2, then --pp-size 2, built, and run by `mpirun -n 2` on
// packages/runtime/test/parallel/generate-rank.js (two concurrent prompts, 8 greedy tokens each, with
// generation logits), compared with the single-rank engine: greedy tokens equal, and the worst logit row's
// max |difference| / max |logit|. Prints a Markdown table (docs/accuracy.md). Needs Open MPI and the
// built packages (npm ci).
//   node tools/parallel/sweep.mjs [fixture...]
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const require = createRequire(path.join(repo, 'packages', 'runtime', 'package.json'));
const { convertCheckpoint } = require('@kiln/convert');
const { buildEngine } = require('@kiln/builder');
const { Engine } = require('@kiln/runtime');

const fixtures = path.join(repo, 'fixtures', 'hf-tiny');
const models = process.argv.slice(2).length > 0 ? process.argv.slice(2) : [...readdirSync(fixtures).sort(), 'scribe-7m'];
const modelDir = (name) => (name === 'scribe-7m' ? path.join(repo, 'packages', 'scribe-7m', 'model') : path.join(fixtures, name));
const prompts = [[5, 6, 7, 8, 9, 10, 11], [40, 41, 42]];
const maxTokens = 8;
const env = { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1', OMPI_MCA_btl: 'self,vader' };
const build = { maxBatchSize: 4, maxSeqLen: 64 };
const tmp = mkdtempSync(path.join(os.tmpdir(), 'kiln-parallel-sweep-'));

function worstRow(a, b) {
  let worst = 0;
  for (let k = 0; k < a.length; k++) {
    const vocab = a[k].generationLogits.length / a[k].outputIds.length;
    for (let row = 0; row < a[k].outputIds.length; row++) {
      let scale = 0;
      let diff = 0;
      for (let i = row * vocab; i < (row + 1) * vocab; i++) {
        scale = Math.max(scale, Math.abs(a[k].generationLogits[i]));
        diff = Math.max(diff, Math.abs(a[k].generationLogits[i] - b[k].generationLogits[i]));
      }
      worst = Math.max(worst, diff / scale);
    }
  }
  return worst;
}

console.log('| model | architecture | tp 2: tokens equal | tp 2: worst row | pp 2: tokens equal | pp 2: worst row |');
console.log('| --- | --- | --- | --- | --- | --- |');
try {
  for (const name of models) {
    const whole = path.join(tmp, `${name}-checkpoint`);
    const config = (await convertCheckpoint({ modelDir: modelDir(name), outputDir: whole, dtype: 'float32' })).config;
    await buildEngine({ checkpointDir: whole, outputDir: path.join(tmp, `${name}-engine`), config: build });
    const engine = await Engine.load(path.join(tmp, `${name}-engine`), { numThreads: 1 });
    const reference = (await Promise.all(prompts.map((p) => engine.generate(p, { maxTokens, ignoreEos: true, returnGenerationLogits: true }))))
      .map((r) => ({ outputIds: r.outputIds, generationLogits: Array.from(r.generationLogits) }));
    await engine.dispose();
    const cells = [];
    for (const [tpSize, ppSize] of [[2, 1], [1, 2]]) {
      const tag = `${name}-tp${tpSize}-pp${ppSize}`;
      await convertCheckpoint({ modelDir: modelDir(name), outputDir: path.join(tmp, `${tag}-checkpoint`), dtype: 'float32', tpSize, ppSize });
      await buildEngine({ checkpointDir: path.join(tmp, `${tag}-checkpoint`), outputDir: path.join(tmp, `${tag}-engine`), config: build });
      const out = path.join(tmp, `${tag}.json`);
      const rankScript = path.join(repo, 'packages', 'runtime', 'test', 'parallel', 'generate-rank.js');
      const run = spawnSync('mpirun', ['-n', '2', '--oversubscribe', '--bind-to', 'none', process.execPath, rankScript, path.join(tmp, `${tag}-engine`),
        prompts.map((p) => p.join(',')).join(';'), String(maxTokens), out], { env, encoding: 'utf8', timeout: 120_000 });
      if (run.status !== 0) throw new Error(`${tag}: mpirun exited ${run.status}: ${run.stderr}`);
      const parallel = JSON.parse(readFileSync(out, 'utf8'));
      const equal = reference.reduce((n, r, k) => n + r.outputIds.filter((id, i) => id === parallel[k].outputIds[i]).length, 0);
      cells.push(`${equal}/${prompts.length * maxTokens}`, worstRow(reference, parallel).toExponential(1));
    }
    console.log(`| ${name} | ${config.architecture} | ${cells.join(' | ')} |`);
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
