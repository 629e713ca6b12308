#!/usr/bin/env node
// The workload compute-sanitizer checks (memcheck, racecheck) on the GPU machine: one generation, then a
// 16-request executor run (half of it sampled on the device), on a float32 cuda engine of the llama
// fixture, with split-K decode attention forced on. `prepare DIR` converts and
// builds the engine (outside the sanitizer: it is slow under it); `run DIR` loads it and generates.
// Exits non-zero when a result is not what the same engine gives on its own (a corrupted run).
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const requireFromRoot = createRequire(path.join(root, 'package.json'));
const [mode, dir] = process.argv.slice(2);
const engineDir = path.join(dir, 'engine');

if (mode === 'prepare') {
  const { convertCheckpoint } = requireFromRoot('@kiln/convert');
  const { buildEngine } = requireFromRoot('@kiln/builder');
  await convertCheckpoint({ modelDir: path.join(root, 'fixtures', 'hf-tiny', 'llama'), outputDir: path.join(dir, 'checkpoint') });
  await buildEngine({
    checkpointDir: path.join(dir, 'checkpoint'),
    outputDir: engineDir,
    config: { target: 'cuda', dtype: 'float32', maxBatchSize: 16, maxSeqLen: 64, maxNumTokens: 256 },
  });
  console.log(`built ${engineDir}`);
} else if (mode === 'run') {
  // Split-K decode attention from 4 keys a split, so that these short sequences take that path too.
  process.env.KILN_CUDA_ATTENTION_SPLIT_KEYS = '4';
  const { Engine } = requireFromRoot('@kiln/runtime');
  const engine = await Engine.load(engineDir);
  const prompt = (n) => Array.from({ length: n }, (_, i) => 1 + ((i * 37) % 500));
  const one = await engine.generate(prompt(12), { maxTokens: 8, ignoreEos: true });
  // Half the requests sample on the device with the warpers, penalties and logprobs.
  const sampled = { temperature: 1.2, topK: 40, topP: 0.9, minP: 0.02, repetitionPenalty: 1.2, logprobs: 3, seed: 9 };
  const many = await Promise.all(
    Array.from({ length: 16 }, (_, r) => engine.generate(prompt(3 + r), { maxTokens: 6, ignoreEos: true, ...(r % 2 ? sampled : {}) })),
  );
  const again = await engine.generate(prompt(12), { maxTokens: 8, ignoreEos: true });
  await engine.dispose();
  if (one.outputIds.join() !== again.outputIds.join() || many.some((r) => r.outputIds.length !== 6)) {
    console.error('sanitize.mjs: results differ between runs', one.outputIds, again.outputIds);
    process.exit(1);
  }
  console.log(`one generation: ${one.outputIds.join(',')}; 16 requests: ${many.map((r) => r.outputIds.length).join(',')} tokens`);
} else {
  console.error('usage: node tools/gpu/sanitize.mjs prepare|run DIR');
  process.exit(2);
}
