#!/usr/bin/env node
// Runs decode steps of an engine for a kernel profiler (ncu) on the GPU machine:
//   ncu --clock-control none --launch-skip N --launch-count M node tools/gpu/decode-steps.mjs ENGINE [TOKENS] [BATCH]
// BATCH concurrent requests (default 1) of a 128-token prompt (the benchmark's ids, shifted per request),
// then TOKENS greedy tokens each (default 32), end of sequence ignored: after the prefill step, decode
// steps of BATCH sequences. KILN_CUDA_PROFILE=1 prints their per-op times instead (graphs off).
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const { Engine } = createRequire(path.join(root, 'package.json'))('@kiln/runtime');
const [engineDir, tokens = '32', batch = '1'] = process.argv.slice(2);
if (!engineDir) {
  console.error('usage: node tools/gpu/decode-steps.mjs ENGINE_DIR [TOKENS]');
  process.exit(2);
}
const engine = await Engine.load(engineDir);
const prompt = (r) => Array.from({ length: 128 }, (_, i) => 100 + ((i * 7919 + r) % 31800));
const results = await Promise.all(
  Array.from({ length: Number(batch) }, (_, r) => engine.generate(prompt(r), { maxTokens: Number(tokens), ignoreEos: true })),
);
console.log(`decode-steps: ${results.length} x ${results[0].outputIds.length} tokens`);
await engine.dispose();
