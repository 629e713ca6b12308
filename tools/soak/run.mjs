#!/usr/bin/env node
// Soak test of `kiln serve` (issue 16; not in CI): the server, in a child process, under steady mixed
// load for a while (default 10 minutes): streaming and plain completions, chat, Triton generate, clients
// that disconnect mid-stream, slow readers, and bad requests (malformed JSON, schema violations, oversized
// word lists, unknown models, values at the edges of the schema's ranges). Every 10 s it samples the
// server's resident memory, V8 heap and KV blocks (from /metrics). It reports requests served, errors,
// RSS and KV blocks over time, and checks: 0 server errors (5xx, error-level logs, error events in
// streams), RSS growth under 5% from the first minute after the warm-up to the last minute (means of the
// samples), and every KV block back at the end.
//
//   npm run build && node tools/soak/run.mjs [--duration 600] [--warmup 60] [--clients 24]
//                                            [--engine DIR] [--json FILE]
// Without --engine, scribe-7m is converted and built into a temporary folder (maxBatchSize 64).
// Exits 1 when a check fails.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

const require = createRequire(import.meta.url);
const repo = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');
const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '600' },
    warmup: { type: 'string', default: '60' },
    clients: { type: 'string', default: '24' },
    engine: { type: 'string' },
    json: { type: 'string' },
  },
});
const durationMs = Number(args.duration) * 1000;
const warmupMs = Number(args.warmup) * 1000;
const clients = Number(args.clients);

const work = mkdtempSync(path.join(os.tmpdir(), 'kiln-soak-'));
let engineDir = args.engine;
if (!engineDir) {
  const { convertCheckpoint } = require(path.join(repo, 'packages/convert'));
  const { buildEngine } = require(path.join(repo, 'packages/builder'));
  const { scribe7mPath } = require(path.join(repo, 'packages/scribe-7m'));
  await convertCheckpoint({ modelDir: scribe7mPath, outputDir: path.join(work, 'checkpoint') });
  engineDir = path.join(work, 'scribe-7m');
  await buildEngine({ checkpointDir: path.join(work, 'checkpoint'), outputDir: engineDir, config: { maxBatchSize: 64 } });
}
// A chat template, so that /v1/chat/completions is part of the mix.
const chatTemplate = "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";
const fs = await import('node:fs/promises');
const tokenizerConfigPath = path.join(engineDir, 'tokenizer_config.json');
const tokenizerConfig = JSON.parse(await fs.readFile(tokenizerConfigPath, 'utf8').catch(() => '{}'));
if (!tokenizerConfig.chat_template && !args.engine) await fs.writeFile(tokenizerConfigPath, JSON.stringify({ ...tokenizerConfig, chat_template: chatTemplate }));

const kiln = path.join(repo, 'packages/cli/dist/bin/kiln.js');
const child = spawn(process.execPath, [kiln, 'serve', '--engine', engineDir, '--port', '0', '--model-name', 'soak', '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
let serverLog = '';
child.stdout.on('data', (d) => (serverLog += d));
const url = await new Promise((resolve, reject) => {
  let err = '';
  child.stderr.on('data', (d) => {
    err += d;
    const m = /listening on (http:\/\/\S+)/.exec(err);
    if (m) resolve(m[1]);
  });
  child.once('exit', (code) => reject(new Error(`kiln serve exited ${code}: ${err}`)));
});
const { hostname, port } = new URL(url);

const counts = {};
const count = (key) => (counts[key] = (counts[key] ?? 0) + 1);
const serverErrors = [];
const PROMPTS = ['And the LORD said unto Moses,', 'In the beginning', 'Blessed are the', 'The LORD is my shepherd;', 'Thou shalt not', 'For God so loved'];
const pick = (list) => list[Math.floor(Math.random() * list.length)];
const post = (route, body, init = {}) => fetch(`${url}${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body), ...init });

async function checked(kind, response, expect) {
  const text = await response.text();
  if (response.status >= 500) serverErrors.push(`${kind}: ${response.status} ${text.slice(0, 200)}`);
  else if (!expect.includes(response.status)) serverErrors.push(`${kind}: unexpected ${response.status} ${text.slice(0, 200)}`);
  if (response.status === 200 && /^data: /m.test(text) && /"error"/.test(text)) serverErrors.push(`${kind}: error event ${text.slice(-300)}`);
  count(`${kind} ${response.status}`);
}

// One request of a kind drawn at random.
const kinds = [
  ['stream', 30, async () => checked('stream', await post('/v1/completions', { model: 'soak', prompt: pick(PROMPTS), max_tokens: 16 + Math.floor(Math.random() * 64), stream: true, temperature: 0.8 }), [200])],
  ['completion', 15, async () => checked('completion', await post('/v1/completions', { model: 'soak', prompt: pick(PROMPTS), max_tokens: 24, n: 1 + Math.floor(Math.random() * 3), logprobs: 2 }), [200])],
  ['chat', 10, async () => checked('chat', await post('/v1/chat/completions', { model: 'soak', messages: [{ role: 'user', content: pick(PROMPTS) }], max_tokens: 24, stream: Math.random() < 0.5 }), [200])],
  ['triton', 10, async () => checked('triton', await post('/v2/models/soak/generate_stream', { text_input: pick(PROMPTS), max_tokens: 24, stop_words: 'LORD,God' }), [200])],
  ['cancel', 10, async () => {
    const controller = new AbortController();
    try {
      const response = await post('/v1/completions', { model: 'soak', prompt: pick(PROMPTS), max_tokens: 400, ignore_eos: true, stream: true }, { signal: controller.signal });
      const reader = response.body.getReader();
      await reader.read();
      await reader.read();
      controller.abort();
      count('cancel');
    } catch (error) {
      if (!controller.signal.aborted) serverErrors.push(`cancel: ${error.message}`);
    }
  }],
  ['slow', 5, () => new Promise((resolve) => {
    // A raw socket that reads in bursts, far slower than the server writes.
    const payload = JSON.stringify({ model: 'soak', prompt: pick(PROMPTS), max_tokens: 300, ignore_eos: true, logprobs: 10, n: 4, stream: true });
    const socket = net.connect(Number(port), hostname);
    let tail = '';
    socket.on('data', (d) => {
      tail = (tail + d.toString('latin1')).slice(-64);
      if (tail.endsWith('\r\n0\r\n\r\n')) socket.end();
    });
    const timer = setInterval(() => (socket.isPaused() ? socket.resume() : socket.pause()), 200);
    socket.on('close', () => {
      clearInterval(timer);
      if (/"error"/.test(tail)) serverErrors.push(`slow: error event ${tail}`);
      count('slow');
      resolve();
    });
    socket.on('error', () => undefined);
    socket.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(payload)}\r\nConnection: close\r\n\r\n${payload}`);
  })],
  ['bad', 20, async () => {
    const bad = pick([
      ['/v1/completions', '{"model": "soak", "prompt": '],
      ['/v1/completions', { model: 'soak', prompt: 'x', max_tokens: 0 }],
      ['/v1/completions', { model: 'other', prompt: 'x' }],
      ['/v1/completions', { model: 'soak', prompt: 'x', temperature: 1e308 }],
      ['/v1/completions', { model: 'soak', prompt: 'x', top_p: 1e-320 }],
      ['/v1/completions', { model: 'soak', prompt: 'x', best_of: 3 }],
      ['/v1/completions', { model: 'soak', prompt: 'x', logit_bias: { 5: 1e308 } }],
      ['/v1/completions', { model: 'soak', prompt: 'Amen. '.repeat(5000), max_tokens: 4 }],
      ['/v2/models/soak/generate', { text_input: 'x', max_tokens: 2, bad_words: Array.from({ length: 5000 }, (_, i) => `w${i}`).join(',') }],
      ['/v2/models/soak/generate', { text_input: 'x', max_tokens: 2, presence_penalty: 1e308 }],
      ['/v1/chat/completions', { model: 'soak', messages: [] }],
    ]);
    await checked('bad', await post(bad[0], bad[1]), [400, 404]);
  }],
];
const totalWeight = kinds.reduce((n, [, w]) => n + w, 0);
function drawKind() {
  let r = Math.random() * totalWeight;
  for (const kind of kinds) if ((r -= kind[1]) < 0) return kind;
  return kinds[0];
}

const metrics = async () => (await fetch(`${url}/metrics`)).text();
const metric = (text, name) => {
  for (const line of text.split('\n')) if (line.startsWith(`${name} `)) return Number(line.split(' ')[1]);
  return undefined;
};
const samples = [];
const startFree = metric(await metrics(), 'kiln_kv_blocks_free');
const started = Date.now();
let stop = false;
const sampler = (async () => {
  while (!stop) {
    const text = await metrics();
    const mib = (name) => +(metric(text, name) / 2 ** 20).toFixed(1);
    // The V8 heap and the memory outside it (ArrayBuffers, native) beside RSS, to tell a JavaScript leak from native growth.
    samples.push({ s: Math.round((Date.now() - started) / 1000), rssMiB: mib('process_resident_memory_bytes'), heapMiB: mib('nodejs_heap_size_used_bytes'), externalMiB: mib('nodejs_external_memory_bytes'), kvUsed: metric(text, 'kiln_kv_blocks_used'), kvFree: metric(text, 'kiln_kv_blocks_free'), running: metric(text, 'kiln_running_requests') });
    process.stderr.write(`\r${JSON.stringify(samples[samples.length - 1])} requests ${Object.values(counts).reduce((a, b) => a + b, 0)}   `);
    await new Promise((resolve) => setTimeout(resolve, 10_000));
  }
})();
await Promise.all(Array.from({ length: clients }, async () => {
  while (Date.now() - started < durationMs) {
    try {
      await drawKind()[2]();
    } catch (error) {
      serverErrors.push(`client: ${error.message}`);
    }
  }
}));
stop = true;
await sampler;
// Idle: every request's blocks must come back.
let final = await metrics();
for (let i = 0; i < 100 && (metric(final, 'kiln_kv_blocks_used') !== 0 || metric(final, 'kiln_running_requests') !== 0); i++) {
  await new Promise((resolve) => setTimeout(resolve, 100));
  final = await metrics();
}
const fiveHundreds = [...final.matchAll(/kiln_http_requests_total\{[^}]*status="5\d\d"\} (\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
child.kill('SIGTERM');
const exitCode = await new Promise((resolve) => child.once('exit', resolve));
const errorLogs = serverLog.split('\n').filter((line) => /"level":(50|60)/.test(line));

const afterWarmup = samples.find((s) => s.s * 1000 >= warmupMs) ?? samples[0];
const last = samples[samples.length - 1];
// RSS moves ±15 MiB from one 10 s sample to the next with the requests in flight, so growth is measured
// between means: the first minute after the warm-up against the last minute of the run.
const meanRss = (from, to) => {
  const window = samples.filter((x) => x.s >= from && x.s < to);
  return window.reduce((sum, x) => sum + x.rssMiB, 0) / Math.max(1, window.length);
};
const warmupS = warmupMs / 1000;
const firstMinute = meanRss(warmupS, warmupS + 60);
const lastMinute = meanRss(last.s - 59, last.s + 1);
const growth = (lastMinute - firstMinute) / firstMinute;
const summary = {
  durationS: Math.round((Date.now() - started) / 1000),
  clients,
  requests: Object.values(counts).reduce((a, b) => a + b, 0),
  byKind: counts,
  serverErrors: serverErrors.length + fiveHundreds + errorLogs.length,
  serverErrorSamples: [...serverErrors, ...errorLogs].slice(0, 10),
  http5xx: fiveHundreds,
  rssMiB: {
    afterWarmup: afterWarmup.rssMiB,
    end: last.rssMiB,
    max: Math.max(...samples.map((s) => s.rssMiB)),
    meanFirstMinuteAfterWarmup: +firstMinute.toFixed(1),
    meanLastMinute: +lastMinute.toFixed(1),
    growthAfterWarmupPct: +(growth * 100).toFixed(2),
  },
  heapMiB: { afterWarmup: afterWarmup.heapMiB, end: last.heapMiB, max: Math.max(...samples.map((s) => s.heapMiB)) },
  kvBlocks: { freeAtStart: startFree, freeAtEnd: metric(final, 'kiln_kv_blocks_free'), usedAtEnd: metric(final, 'kiln_kv_blocks_used') },
  serverExitCode: exitCode,
  samples,
};
process.stderr.write('\n');
process.stdout.write(`${JSON.stringify({ ...summary, samples: undefined }, null, 2)}\n`);
process.stdout.write(`${'s'.padStart(5)} ${'RSS MiB'.padStart(8)} ${'heap MiB'.padStart(8)} ${'ext MiB'.padStart(8)} ${'KV used'.padStart(8)} ${'KV free'.padStart(8)} ${'running'.padStart(8)}\n`);
for (const s of samples) process.stdout.write(`${String(s.s).padStart(5)} ${String(s.rssMiB).padStart(8)} ${String(s.heapMiB).padStart(8)} ${String(s.externalMiB).padStart(8)} ${String(s.kvUsed).padStart(8)} ${String(s.kvFree).padStart(8)} ${String(s.running).padStart(8)}\n`);
if (args.json) writeFileSync(args.json, JSON.stringify(summary, null, 2));
rmSync(work, { recursive: true, force: true });
const ok = summary.serverErrors === 0 && growth < 0.05 && summary.kvBlocks.freeAtEnd === startFree && summary.kvBlocks.usedAtEnd === 0 && exitCode === 0;
process.stdout.write(ok ? 'soak: OK\n' : 'soak: FAILED\n');
process.exit(ok ? 0 : 1);
