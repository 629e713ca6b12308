#!/usr/bin/env node
// Where an executor run's time goes, by kind of iteration: `kiln bench`'s workload (N requests of
// I input / O output tokens, at most C at once, ignoring EOS) on the engine's own executor, every
// iteration's stats (executor.onIteration: iterationMs covers scheduling, the step and sampling) kept
// and summed per kind: decode-only iterations by batch size, and iterations with prompt tokens. For the
// concurrency-64 / concurrency-1 ratio of issue 10: it says whether decode steps, prefill, or the gaps
// between iterations (wall time not in any iteration) hold the time.
//
//   node tools/gpu/iteration-profile.mjs ENGINE_DIR [--requests 512] [--input 128] [--output 128] [--concurrency 64]
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const { Engine } = createRequire(path.join(root, 'package.json'))('@kiln/runtime');

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const at = args.indexOf(name);
  return at < 0 ? fallback : Number(args[at + 1]);
};
const engineDir = args[0];
if (!engineDir || engineDir.startsWith('--')) {
  console.error('usage: iteration-profile.mjs ENGINE_DIR [--requests N] [--input I] [--output O] [--concurrency C]');
  process.exit(2);
}
const requests = option('--requests', 512);
const inputLen = option('--input', 128);
const outputLen = option('--output', 128);
const concurrency = option('--concurrency', 64);

const engine = await Engine.load(engineDir);
const vocab = engine.vocabSize;
const prompt = (row) => Array.from({ length: inputLen }, (_, i) => 100 + ((i * 7919 + row * 104729) % (vocab - 200)));

async function run(count) {
  const iterations = [];
  const stop = engine.executor.onIteration((s) => iterations.push(s));
  const t0 = process.hrtime.bigint();
  let next = 0;
  let tokens = 0;
  const worker = async () => {
    while (next < count) {
      const row = next++;
      for await (const event of engine.executor.stream({ inputIds: prompt(row), maxTokens: outputLen, ignoreEos: true })) {
        tokens += event.outputIds.length;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  stop();
  return { iterations, wallMs, tokens };
}

await run(Math.min(requests, 2 * concurrency)); // warm-up: graph capture for every batch size met
const { iterations, wallMs, tokens } = await run(requests);
const kinds = new Map();
for (const s of iterations) {
  const kind = s.numContextTokens > 0 ? `with prompt tokens (${s.numContextTokens > 2048 ? '> 2048' : '<= 2048'})` : `decode, batch ${s.numGenerationTokens}`;
  const k = kinds.get(kind) ?? { count: 0, ms: 0, tokens: 0 };
  k.count += 1;
  k.ms += s.iterationMs;
  k.tokens += s.numGenerationTokens;
  kinds.set(kind, k);
}
const inIterations = iterations.reduce((a, s) => a + s.iterationMs, 0);
console.log(`${engineDir}: ${requests} x ${inputLen}/${outputLen} at concurrency ${concurrency}: ${tokens} output tokens in ${wallMs.toFixed(0)} ms = ${((tokens / wallMs) * 1e3).toFixed(0)} tok/s`);
console.log(`${iterations.length} iterations, ${inIterations.toFixed(0)} ms in them, ${(wallMs - inIterations).toFixed(0)} ms between them`);
const rows = [...kinds.entries()].sort((a, b) => b[1].ms - a[1].ms);
for (const [kind, k] of rows.slice(0, 12)) {
  console.log(`  ${kind.padEnd(28)} ${String(k.count).padStart(6)} iterations ${k.ms.toFixed(0).padStart(7)} ms  ${(k.ms / k.count).toFixed(3).padStart(8)} ms each`);
}
await engine.executor.shutdown();
engine.dispose();
