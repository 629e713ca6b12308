#!/usr/bin/env node
// Runs decode steps of an engine for a kernel profiler (ncu) on the GPU machine:
//   ncu --clock-control none --launch-skip N --launch-count M node tools/gpu/decode-steps.mjs ENGINE [TOKENS]
// A 128-token prompt (the benchmark's ids), then TOKENS greedy tokens (default 32), end of sequence ignored.
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const { Engine } = createRequire(path.join(root, 'package.json'))('@kiln/runtime');
const [engineDir, tokens = '32'] = process.argv.slice(2);
if (!engineDir) {
  console.error('usage: node tools/gpu/decode-steps.mjs ENGINE_DIR [TOKENS]');
  process.exit(2);
}
const engine = await Engine.load(engineDir);
const prompt = Array.from({ length: 128 }, (_, i) => 100 + ((i * 7919) % 31800));
const result = await engine.generate(prompt, { maxTokens: Number(tokens), ignoreEos: true });
console.log(`decode-steps: ${result.outputIds.length} tokens`);
await engine.dispose();
