#!/usr/bin/env node
// Batch-1 engines of the issue-10 model for A/B runs on the GPU machine (tools/gpu/decode-sweep.mjs,
// decode-steps.mjs): the TinyLlama-1.1B-shaped random llama (tools/bench/make-random-llama.mjs; reused
// when present), converted once, then one engine per variant of tools/bench/gpu/config.mjs, built side
// by side (about 40 s for four on the H200 machine):
//
//   node tools/gpu/batch1-engines.mjs [--out DIR] VARIANT...      (e.g. bfloat16 int8 int4 fp8)
//
// Engines go to DIR/<variant>-b1 (default tools/bench/.out/batch1).
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { makeRandomLlama } from '../bench/make-random-llama.mjs';
import { SHAPES, VARIANTS } from '../bench/gpu/config.mjs';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const requireFromRoot = createRequire(path.join(root, 'package.json'));
const { convertCheckpoint } = requireFromRoot('@kiln/convert');
const { buildEngine } = requireFromRoot('@kiln/builder');

const args = process.argv.slice(2);
const outAt = args.indexOf('--out');
const work = outAt >= 0 ? path.resolve(args.splice(outAt, 2)[1]) : path.join(root, 'tools/bench/.out/batch1');
const names = args;
const unknown = names.filter((n) => !VARIANTS.some((v) => v.name === n));
if (names.length === 0 || unknown.length > 0) {
  console.error(`usage: node tools/gpu/batch1-engines.mjs [--out DIR] VARIANT... (variants: ${VARIANTS.map((v) => v.name).join(', ')})`);
  process.exit(2);
}
const t0 = Date.now();
const seconds = () => ((Date.now() - t0) / 1000).toFixed(1);
const model = await makeRandomLlama(path.join(work, 'hf'), SHAPES.tinyllama);
const checkpointDir = path.join(work, 'checkpoint');
await convertCheckpoint({ modelDir: model.dir, outputDir: checkpointDir });
console.log(`model and checkpoint ready (${seconds()} s)`);
await Promise.all(
  names.map(async (name) => {
    const variant = VARIANTS.find((v) => v.name === name);
    const config = { target: 'cuda', ...variant.build, maxBatchSize: 1, maxSeqLen: 512, maxNumTokens: 512 };
    const outputDir = path.join(work, `${name}-b1`);
    await buildEngine({ checkpointDir, outputDir, config });
    console.log(`${outputDir} (${seconds()} s)`);
  }),
);
