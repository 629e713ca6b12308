#!/usr/bin/env node
// The workload compute-sanitizer checks (memcheck, racecheck) on the GPU machine: one generation, then a
// 16-request executor run (half of it sampled on the device), on a float32 cuda engine of the llama
// fixture, with split-K decode attention forced on; then the same on a bfloat16 engine of a small random
// LLaMA with head dim 64 and 8 query heads per KV head (the grouped decode attention). `prepare DIR` converts and
// builds the engine (outside the sanitizer: it is slow under it); `run DIR` loads it and generates.
// Exits non-zero when a result is not what the same engine gives on its own (a corrupted run).
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const requireFromRoot = createRequire(path.join(root, 'package.json'));
const [mode, dir] = process.argv.slice(2);
const engineDir = path.join(dir, 'engine');
const gqaEngineDir = path.join(dir, 'gqa-engine');

if (mode === 'prepare') {
  const { convertCheckpoint } = requireFromRoot('@kiln/convert');
  const { buildEngine } = requireFromRoot('@kiln/builder');
  await convertCheckpoint({ modelDir: path.join(root, 'fixtures', 'hf-tiny', 'llama'), outputDir: path.join(dir, 'checkpoint') });
  await buildEngine({
    checkpointDir: path.join(dir, 'checkpoint'),
    outputDir: engineDir,
    config: { target: 'cuda', dtype: 'float32', maxBatchSize: 16, maxSeqLen: 64, maxNumTokens: 256 },
  });
  // A random LLaMA with real head dims (64, 8 query heads per KV head), bfloat16: the grouped decode
  // attention and the 16-bit paths, which the fixture's head dim of 16 does not take.
  const { makeRandomLlama } = await import(path.join(root, 'tools', 'bench', 'make-random-llama.mjs'));
  const model = await makeRandomLlama(path.join(dir, 'gqa-hf'), { layers: 2, hidden: 512, intermediate: 1024, heads: 8, kvHeads: 1, vocab: 4096, maxPositions: 512, seed: 7 });
  await convertCheckpoint({ modelDir: model.dir, outputDir: path.join(dir, 'gqa-checkpoint') });
  await buildEngine({
    checkpointDir: path.join(dir, 'gqa-checkpoint'),
    outputDir: gqaEngineDir,
    config: { target: 'cuda', dtype: 'bfloat16', maxBatchSize: 16, maxSeqLen: 512, maxNumTokens: 512 },
  });
  console.log(`built ${engineDir} and ${gqaEngineDir}`);
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
  // The bfloat16 GQA engine: a 300-token prompt (split-K over several blocks), then 16 requests.
  const gqa = await Engine.load(gqaEngineDir);
  const long = await gqa.generate(prompt(300), { maxTokens: 8, ignoreEos: true });
  const gqaMany = await Promise.all(Array.from({ length: 16 }, (_, r) => gqa.generate(prompt(20 + 9 * r), { maxTokens: 6, ignoreEos: true, ...(r % 2 ? sampled : {}) })));
  await gqa.dispose();
  if (long.outputIds.length !== 8 || gqaMany.some((r) => r.outputIds.length !== 6)) {
    console.error('sanitize.mjs: the GQA engine gave short results');
    process.exit(1);
  }
  if (one.outputIds.join() !== again.outputIds.join() || many.some((r) => r.outputIds.length !== 6)) {
    console.error('sanitize.mjs: results differ between runs', one.outputIds, again.outputIds);
    process.exit(1);
  }
  console.log(`one generation: ${one.outputIds.join(',')}; 16 requests: ${many.map((r) => r.outputIds.length).join(',')} tokens`);
} else {
  console.error('usage: node tools/gpu/sanitize.mjs prepare|run DIR');
  process.exit(2);
}
