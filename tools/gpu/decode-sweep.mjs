#!/usr/bin/env node
// Batch-1 decode of engines under several settings of the switches read when an engine loads, measured
// in rounds so that every setting runs once per round (the card's clocks and the host drift between
// rounds, not between settings). For A/B of decode kernels on the GPU machine:
//
//   node tools/gpu/decode-sweep.mjs [--rounds 2] [--tokens 256] ENGINE_DIR... -- 'NAME=V,NAME=V' 'NAME=V' ...
//
// Each setting is a comma-separated list of environment variables ('' = as shipped). Prints one line per
// (engine, setting): the median and the best decode ms/token over the rounds (each round itself the
// median of 3 runs, tools/bench/gpu/kiln-decode.mjs), and the first token's ms. Every measurement runs
// in a child process of its own: the native library reads most switches once per process.
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { measureDecode } from '../bench/gpu/kiln-decode.mjs';

if (process.argv[2] === '--child') {
  // One measurement under the parent's setting (measureDecode sets it): its result as JSON on stdout.
  const [engine, newTokensText, promptText, envText] = process.argv.slice(3);
  const result = await measureDecode(engine, JSON.parse(promptText), Number(newTokensText), JSON.parse(envText), () => {});
  delete result.ids;
  process.stdout.write(JSON.stringify(result));
  process.exit(0);
}

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const at = args.indexOf(name);
  if (at < 0) return fallback;
  const value = Number(args[at + 1]);
  args.splice(at, 2);
  return value;
};
const rounds = option('--rounds', 2);
const newTokens = option('--tokens', 256);
const split = args.indexOf('--');
if (split < 1) {
  console.error("usage: node tools/gpu/decode-sweep.mjs [--rounds N] [--tokens N] ENGINE_DIR... -- 'NAME=V,NAME=V' ...");
  process.exit(2);
}
const engines = args.slice(0, split);
const settings = args.slice(split + 1);
if (settings.length === 0) settings.push('');
const parse = (setting) =>
  Object.fromEntries(
    setting
      .split(',')
      .filter(Boolean)
      .map((pair) => {
        const eq = pair.indexOf('=');
        if (eq < 1) throw new Error(`decode-sweep: '${pair}' is not NAME=VALUE`);
        return [pair.slice(0, eq), pair.slice(eq + 1)];
      }),
  );
// The benchmark's batch-1 prompt (gpu-baseline.mjs's promptIds, row 0).
const prompt = Array.from({ length: 128 }, (_, i) => 100 + ((i * 7919) % (32000 - 200)));

for (const engine of engines) {
  const results = settings.map(() => []);
  for (let round = 0; round < rounds; round++) {
    for (const [i, setting] of settings.entries()) {
      const env = parse(setting);
      try {
        const out = execFileSync(process.execPath, [fileURLToPath(import.meta.url), '--child', engine, String(newTokens), JSON.stringify(prompt), JSON.stringify(env)], {
          env: { ...process.env, ...env },
          encoding: 'utf8',
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        results[i].push(JSON.parse(out));
      } catch (error) {
        results[i].push({ error: error.message.split('\n')[0] });
      }
    }
  }
  for (const [i, setting] of settings.entries()) {
    const ok = results[i].filter((r) => !r.error);
    const ms = ok.map((r) => r.msPerToken).sort((a, b) => a - b);
    const line = ms.length
      ? `median ${ms[Math.floor((ms.length - 1) / 2)].toFixed(4)} best ${ms[0].toFixed(4)} ms/token; first token ${ok[0].firstTokenMs.toFixed(2)} ms`
      : `FAILED: ${results[i][0].error}`;
    console.log(`decode-sweep ${engine.split('/').pop()} [${setting || 'as shipped'}]: ${line}`);
  }
}
