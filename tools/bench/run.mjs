#!/usr/bin/env node
// CPU benchmark: Kiln (@kiln/runtime Engine, bf16 engine of scribe-7m) against node-llama-cpp (llama.cpp's
// prebuilt CPU backend, a bf16 GGUF of the same checkpoint made by hf-to-gguf.mjs), in one process, on the
// same token ids. Measures prefill and greedy-decode throughput, greedy agreement, and the effective weight
// bandwidth of decode next to this machine's memcpy bandwidth. See docs/benchmarks.md.
//
// Usage: node tools/bench/run.mjs [--json] [--runs 5] [--threads 2]
//   (after `npm install --prefix tools/bench` and a build of the repository: `npx tsc -b tsconfig.build.json`
//   and the native addon)
// --json prints the results as JSON on stdout and the markdown report on stderr.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';
import { convertHfToGguf } from './hf-to-gguf.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const outDir = path.join(here, '.out');
// The Kiln packages are the repository's workspaces (CommonJS, built into dist/), resolved from the root.
const requireFromRoot = createRequire(path.join(here, '..', '..', 'package.json'));
const { convertCheckpoint } = requireFromRoot('@kiln/convert');
const { buildEngine } = requireFromRoot('@kiln/builder');
const { Engine, Tokenizer } = requireFromRoot('@kiln/runtime');
const { scribe7mPath } = requireFromRoot('@kiln/scribe-7m');

function parseArgs(argv) {
  const args = { json: false, runs: 5, threads: [2, 1], promptTokens: 128, genTokens: 128, agreeTokens: 32 };
  const positive = (name, text) => {
    const value = Number(text);
    if (!Number.isSafeInteger(value) || value < 1 || value > 1024) throw new Error(`${name} needs positive integers, got ${JSON.stringify(text)}`);
    return value;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--json') args.json = true;
    else if (arg === '--runs') args.runs = positive('--runs', argv[++i]);
    else if (arg === '--threads') args.threads = String(argv[++i]).split(',').map((t) => positive('--threads', t));
    else throw new Error(`unknown argument ${arg} (known: --json, --runs N, --threads N[,N...])`);
  }
  return args;
}

// A fixed public-domain text (KJV Genesis 1), the register scribe-7m was trained on; its first 128 token ids
// under scribe's tokenizer are the prompt of both engines.
export const PROMPT_TEXT =
  'In the beginning God created the heaven and the earth. And the earth was without form, and void; and ' +
  'darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters. And God ' +
  'said, Let there be light: and there was light. And God saw the light, that it was good: and God divided ' +
  'the light from the darkness. And God called the light Day, and the darkness he called Night. And the ' +
  'evening and the morning were the first day. And God said, Let there be a firmament in the midst of the ' +
  'waters, and let it divide the waters from the waters. And God made the firmament, and divided the waters ' +
  'which were under the firmament from the waters which were above the firmament: and it was so. And God ' +
  'called the firmament Heaven. And the evening and the morning were the second day.';

export const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

/** Sum of the weights of a Kiln engine file, from its header (docs/engine-format.md). */
export function kilnWeights(engineFile) {
  const fd = fs.openSync(engineFile, 'r');
  try {
    const fixed = Buffer.alloc(24);
    fs.readSync(fd, fixed, 0, 24, 0);
    if (fixed.toString('latin1', 0, 8) !== 'KILNENG\0') throw new Error(`${engineFile}: not a Kiln engine (bad magic)`);
    const headerLength = Number(fixed.readBigUInt64LE(16));
    if (headerLength < 1 || headerLength > 64 * 1024 * 1024) throw new Error(`${engineFile}: header length ${headerLength} out of range`);
    const header = Buffer.alloc(headerLength);
    fs.readSync(fd, header, 0, headerLength, 24);
    const weights = JSON.parse(header.toString('utf8')).weights;
    const total = weights.reduce((sum, w) => sum + w.byteLength, 0);
    // The embedding table is gathered (one row per token), not streamed; every other weight is read whole.
    const embedding = weights.find((w) => /embed/i.test(w.name));
    const streamed = total - (embedding ? embedding.byteLength - embedding.byteLength / embedding.shape[0] : 0);
    return { total, streamed, fileBytes: fs.statSync(engineFile).size, weights };
  } finally {
    fs.closeSync(fd);
  }
}

/** memcpy bandwidth (Buffer.copy is a memcpy) over `bytes`, best of `reps`, in bytes copied per second. */
export function copyBandwidth(bytes, reps) {
  const src = Buffer.alloc(bytes, 1);
  const dst = Buffer.alloc(bytes);
  src.copy(dst); // touch both so page faults are not timed
  const inner = Math.max(1, Math.round((256 * 1024 * 1024) / bytes)); // ~256 MB copied per sample
  const rates = [];
  for (let r = 0; r < reps; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < inner; i++) src.copy(dst, 0, 0, bytes);
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    rates.push((bytes * inner) / seconds);
  }
  return { best: Math.max(...rates), median: median(rates) };
}

/** One Kiln request: timestamps of the call and of every generated token. */
export async function runKiln(engine, ids, count) {
  const times = [];
  const tokens = [];
  const t0 = performance.now();
  const result = await engine.generate(ids, {
    maxTokens: count,
    ignoreEos: true,
    onToken: (id) => {
      times.push(performance.now());
      tokens.push(id);
    },
  });
  const tEnd = performance.now();
  if (result.outputIds.length !== count) throw new Error(`Kiln generated ${result.outputIds.length} tokens, expected ${count}`);
  return { t0, times, tEnd, tokens: result.outputIds };
}

/** One node-llama-cpp request on a cleared sequence, greedy (temperature 0), EOS not stopping it. */
export async function runLlama(sequence, ids, count) {
  await sequence.clearHistory();
  const times = [];
  const tokens = [];
  const t0 = performance.now();
  for await (const token of sequence.evaluate(ids, { temperature: 0, yieldEogToken: true })) {
    times.push(performance.now());
    tokens.push(token);
    if (tokens.length === count) break; // the last sampled token is not evaluated, as in Kiln
  }
  const tEnd = performance.now();
  if (tokens.length !== count) throw new Error(`node-llama-cpp generated ${tokens.length} tokens, expected ${count}`);
  return { t0, times, tEnd, tokens };
}

/** Prefill = call to first token (prompt forward + sampling); decode = the steps between first and last token. */
function summarize(runs, promptTokens, genTokens) {
  const prefillMs = runs.map((r) => r.times[0] - r.t0);
  const decodeMs = runs.map((r) => r.times[genTokens] - r.times[0]);
  const p = median(prefillMs);
  const d = median(decodeMs);
  return {
    prefillMsMedian: p,
    prefillTokensPerSec: (promptTokens * 1000) / p,
    decodeMsMedian: d,
    decodeTokensPerSec: (genTokens * 1000) / d,
    decodeMsPerToken: d / genTokens,
    prefillMsRuns: prefillMs,
    decodeMsRuns: decodeMs,
  };
}

/** The repository commit measured, "+dirty" when the working tree has changes; "unknown" without git. */
export function repositoryRevision() {
  try {
    const run = (...a) => execFileSync('git', a, { cwd: here, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return run('rev-parse', '--short', 'HEAD') + (run('status', '--porcelain', '--untracked-files=no') ? '+dirty' : '');
  } catch {
    return 'unknown';
  }
}

export function cpuModel() {
  try {
    const line = fs.readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('model name'));
    return line ? line.split(':')[1].trim() : os.cpus()[0]?.model ?? 'unknown';
  } catch {
    return os.cpus()[0]?.model ?? 'unknown';
  }
}

const fmt = (value, digits = 1) => value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

const ENGINES = [
  { key: 'kiln', label: 'Kiln' },
  { key: 'llamaFaOff', label: 'llama.cpp, flash attn off' },
  { key: 'llamaFaOn', label: 'llama.cpp, flash attn on' },
];

function markdownForThreads(r, config) {
  const cells = (f) => ENGINES.map((e) => f(r.engines[e.key])).join(' | ');
  const ratios = (f) => ENGINES.slice(1).map((e) => `${fmt(f(r.engines.kiln) / f(r.engines[e.key]), 2)}×`).join(' / ');
  const gbs = (v) => `${fmt(v / 1e9, 1)} GB/s`;
  const agree = ENGINES.slice(1)
    .map((e) => {
      const a = r.agreement[e.key];
      return `${e.label}: ${a.firstN}/${config.agreeTokens} (${a.all}/${config.genTokens + 1} over all, first difference at ${a.firstDifference ?? 'none'})`;
    })
    .join('; ');
  return [
    `### ${r.threads} thread${r.threads === 1 ? '' : 's'}`,
    '',
    `| | ${ENGINES.map((e) => e.label).join(' | ')} | Kiln / llama.cpp (FA off / FA on) |`,
    `| --- | ${ENGINES.map(() => '---:').join(' | ')} | ---: |`,
    `| prefill ${config.promptTokens} tokens (tokens/s) | ${cells((e) => fmt(e.prefillTokensPerSec, 0))} | ${ratios((e) => e.prefillTokensPerSec)} |`,
    `| prefill time (ms) | ${cells((e) => fmt(e.prefillMsMedian, 2))} | |`,
    `| decode ${config.genTokens} tokens (tokens/s) | ${cells((e) => fmt(e.decodeTokensPerSec, 0))} | ${ratios((e) => e.decodeTokensPerSec)} |`,
    `| decode time per token (ms) | ${cells((e) => fmt(e.decodeMsPerToken, 3))} | |`,
    `| effective weight bandwidth in decode | ${cells((e) => gbs(e.effectiveBytesPerSec))} | |`,
    `| llama.cpp's own decode time per token (ms, llama_perf) | – | ${ENGINES.slice(1).map((e) => { const v = r.engines[e.key].llamaCppInternal?.eval; return v ? fmt(v.msPerToken, 3) : 'n/a'; }).join(' | ')} | |`,
    `| llama.cpp's own prompt time per token (ms, llama_perf) | – | ${ENGINES.slice(1).map((e) => { const v = r.engines[e.key].llamaCppInternal?.promptEval; return v ? fmt(v.msPerToken, 4) : 'n/a'; }).join(' | ')} | |`,
    '',
    `Greedy agreement with Kiln over the first ${config.agreeTokens} generated tokens: ${agree}.`,
  ].join('\n');
}

function markdown(results) {
  const m = results.machine;
  const w = results.weights;
  const l = results.llamaCpp;
  return [
    `Machine: ${m.cpuModel}, nproc ${m.nproc}, ${m.totalMemGiB} GiB RAM, Node ${m.node}; load average ${m.loadAvgBefore.map((v) => fmt(v, 2)).join(' ')} before, ${m.loadAvgAfter.map((v) => fmt(v, 2)).join(' ')} after.`,
    `Kiln ${m.kilnRevision}, engine target ${results.kilnIsa}; llama.cpp: node-llama-cpp ${l.version} (llama.cpp release ${l.llamaCppRelease}), prebuilt CPU binary (${l.systemInfo}), context ${l.contextSize}, batch ${l.batchSize}.`,
    `Prompt ${results.config.promptTokens} token ids; ${results.config.genTokens + 1} greedy tokens (1 from prefill, then ${results.config.genTokens} decode steps); medians of ${results.config.runs} runs after 1 warm-up, runs of the three interleaved.`,
    `Weights: Kiln engine ${fmt(w.kiln.total / 1e6, 2)} MB, GGUF tensors ${fmt(w.gguf.total / 1e6, 2)} MB; streamed per decoded token (all but the embedding table, of which one row): ${fmt(w.kiln.streamed / 1e6, 2)} MB / ${fmt(w.gguf.streamed / 1e6, 2)} MB.`,
    `memcpy bandwidth (Buffer.copy, 1 thread, best of 5, bytes copied per second): ${fmt(m.copyBandwidth256MB.best / 1e9, 1)} GB/s over 256 MB buffers (DRAM), ${fmt(m.copyBandwidth8MB.best / 1e9, 1)} GB/s over 8 MB buffers (in cache).`,
    '',
    ...results.byThreads.map((r) => markdownForThreads(r, results.config) + '\n'),
  ].join('\n');
}

/** The prompt-eval and eval lines of llama.cpp's llama_perf_context_print: totals and ms per token. */
export function parseLlamaPerf(text) {
  const line = (label) => {
    const m = new RegExp(`${label}\\s*=\\s*([\\d.]+) ms /\\s*(\\d+) (?:tokens|runs)`).exec(text);
    return m ? { ms: Number(m[1]), count: Number(m[2]), msPerToken: Number(m[1]) / Number(m[2]) } : null;
  };
  return { promptEval: line('prompt eval time'), eval: line('(?<!prompt )eval time') };
}

export function agreement(a, b, firstN) {
  let firstDifference = null;
  let all = 0;
  for (let i = 0; i < a.length; i++) {
    if (a[i] === b[i]) all++;
    else if (firstDifference === null) firstDifference = i;
  }
  const first = a.slice(0, firstN).filter((t, i) => t === b[i]).length;
  return { firstN: first, all, firstDifference };
}

const startedAt = performance.now();
/** Progress on stderr, so that --json output on stdout stays clean. */
function progress(message) {
  process.stderr.write(`[bench ${((performance.now() - startedAt) / 1000).toFixed(1)}s] ${message}\n`);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const loadAvgBefore = os.loadavg();
  fs.mkdirSync(outDir, { recursive: true });

  // Both engines from the same bf16 checkpoint. Rebuilt on every run: cheap (well under a second here)
  // and never stale. The builder reuses an engine with the same build hash.
  const ggufFile = path.join(outDir, 'scribe-7m-bf16.gguf');
  progress('converting scribe-7m to GGUF and building the Kiln engine');
  const gguf = await convertHfToGguf(scribe7mPath, ggufFile);
  const checkpointDir = path.join(outDir, 'kiln-checkpoint');
  const engineDir = path.join(outDir, 'kiln-engine');
  await convertCheckpoint({ modelDir: scribe7mPath, outputDir: checkpointDir, dtype: 'bfloat16' });
  await buildEngine({ checkpointDir, outputDir: engineDir });

  const tokenizer = await Tokenizer.load(scribe7mPath);
  const allIds = tokenizer.encode(PROMPT_TEXT);
  if (allIds.length < args.promptTokens) throw new Error(`the prompt text has ${allIds.length} tokens, fewer than ${args.promptTokens}`);
  const ids = allIds.slice(0, args.promptTokens);
  const count = args.genTokens + 1; // the first token comes from prefill; then genTokens decode steps

  const kw = kilnWeights(path.join(engineDir, 'rank0.engine'));
  const weights = {
    kiln: kw,
    gguf: { total: gguf.tensorBytes, streamed: gguf.tensorBytes - (gguf.embeddingBytes - gguf.embeddingBytes / gguf.vocab), fileBytes: gguf.fileBytes },
  };

  progress('loading node-llama-cpp');
  const llamaLog = [];
  const llama = await getLlama({
    gpu: false, // CPU backend only
    build: 'never', // never compile llama.cpp: the prebuilt binary from the npm package, or fail
    skipDownload: true, // never fetch llama.cpp sources
    usePrebuiltBinaries: true,
    progressLogs: false,
    // info, so that llama.cpp's own timings (printTimings) reach the logger; everything is kept, and
    // only warnings and errors are shown.
    logLevel: LlamaLogLevel.info,
    logger: (level, message) => {
      llamaLog.push(message);
      if (level === LlamaLogLevel.warn || level === LlamaLogLevel.error || level === LlamaLogLevel.fatal) process.stderr.write(`[llama.cpp] ${message}\n`);
    },
    maxThreads: 0, // no cap of node-llama-cpp's own: each context gets exactly the threads it asks for
  });
  const model = await llama.loadModel({ modelPath: ggufFile, gpuLayers: 0 });
  const nodeLlamaCppVersion = JSON.parse(fs.readFileSync(path.join(here, 'node_modules', 'node-llama-cpp', 'package.json'), 'utf8')).version;
  const llamaInfo = { version: nodeLlamaCppVersion, llamaCppRelease: llama.llamaCppRelease.release, systemInfo: llama.systemInfo.trim(), contextSize: 512, batchSize: 512 };

  const byThreads = [];
  let kilnIsa;
  try {
    for (const threads of args.threads) {
      // Every run repeats the same prompt. llama.cpp's sequence is cleared before each run, so it prefills
      // all 128 tokens every time; Kiln's prefix cache would reuse the KV blocks of the previous run and
      // skip most of that work, so it is turned off here to measure the same computation.
      const engine = await Engine.load(engineDir, { numThreads: threads, enableBlockReuse: false });
      kilnIsa = engine.info.isa;
      // node-llama-cpp's default flashAttention "auto" turns it on for this model on CPU; both are measured.
      const contexts = {};
      for (const [key, flashAttention] of [['llamaFaOff', false], ['llamaFaOn', true]]) {
        contexts[key] = await model.createContext({ contextSize: llamaInfo.contextSize, batchSize: llamaInfo.batchSize, threads, flashAttention, sequences: 1, performanceTracking: true });
      }
      try {
        const sequences = { llamaFaOff: contexts.llamaFaOff.getSequence(), llamaFaOn: contexts.llamaFaOn.getSequence() };
        const run = {
          kiln: () => runKiln(engine, ids, count),
          llamaFaOff: () => runLlama(sequences.llamaFaOff, ids, count),
          llamaFaOn: () => runLlama(sequences.llamaFaOn, ids, count),
        };
        // One warm-up each (page-in of the weights, thread pools, allocators), then interleaved measured
        // runs so that load from other processes on this shared machine hits all alike.
        progress(`${threads} thread(s): warm-up`);
        for (const e of ENGINES) await run[e.key]();
        for (const key of ['llamaFaOff', 'llamaFaOn']) await contexts[key].printTimings(); // resets llama.cpp's counters
        const runs = Object.fromEntries(ENGINES.map((e) => [e.key, []]));
        for (let i = 0; i < args.runs; i++) {
          progress(`${threads} thread(s): run ${i + 1} of ${args.runs}`);
          for (const e of ENGINES) runs[e.key].push(await run[e.key]());
        }

        // llama.cpp's own accounting of the measured runs (llama_perf_context_print): time inside
        // llama_decode, without node-llama-cpp's JavaScript, sampling and scheduling around it.
        const internal = {};
        for (const key of ['llamaFaOff', 'llamaFaOn']) {
          llamaLog.length = 0;
          await contexts[key].printTimings();
          internal[key] = parseLlamaPerf(llamaLog.join('\n'));
        }
        const engines = {};
        for (const e of ENGINES) {
          const summary = summarize(runs[e.key], args.promptTokens, args.genTokens);
          const streamed = e.key === 'kiln' ? weights.kiln.streamed : weights.gguf.streamed;
          engines[e.key] = { ...summary, effectiveBytesPerSec: streamed * summary.decodeTokensPerSec, llamaCppInternal: internal[e.key], tokens: runs[e.key][0].tokens };
          // Greedy decoding is deterministic: every run of one engine must give the same tokens.
          for (const r of runs[e.key]) {
            if (r.tokens.join() !== runs[e.key][0].tokens.join()) throw new Error(`${e.label}: greedy output differs between runs`);
          }
        }
        const agreementWithKiln = {};
        for (const e of ENGINES.slice(1)) agreementWithKiln[e.key] = agreement(engines.kiln.tokens, engines[e.key].tokens, args.agreeTokens);
        byThreads.push({
          threads,
          engines,
          agreement: agreementWithKiln,
          ratios: Object.fromEntries(
            ENGINES.slice(1).map((e) => [
              e.key,
              {
                prefill: engines.kiln.prefillTokensPerSec / engines[e.key].prefillTokensPerSec,
                decode: engines.kiln.decodeTokensPerSec / engines[e.key].decodeTokensPerSec,
              },
            ]),
          ),
        });
      } finally {
        engine.dispose();
        for (const c of Object.values(contexts)) await c.dispose();
      }
    }
  } finally {
    await model.dispose();
    await llama.dispose();
  }

  progress('measuring memcpy bandwidth');
  const results = {
    config: { runs: args.runs, threads: args.threads, promptTokens: args.promptTokens, genTokens: args.genTokens, agreeTokens: args.agreeTokens },
    machine: {
      cpuModel: cpuModel(),
      nproc: os.availableParallelism(),
      totalMemGiB: Math.round(os.totalmem() / 2 ** 30),
      node: process.version,
      kilnRevision: repositoryRevision(),
      loadAvgBefore,
      loadAvgAfter: os.loadavg(),
      copyBandwidth256MB: copyBandwidth(256 * 1024 * 1024, 5),
      copyBandwidth8MB: copyBandwidth(8 * 1024 * 1024, 5),
    },
    kilnIsa,
    llamaCpp: llamaInfo,
    weights,
    byThreads,
  };
  const report = markdown(results);
  if (args.json) {
    process.stderr.write(`${report}\n`);
    process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
  } else {
    process.stdout.write(`${report}\n`);
  }
}

// Run only as a script: bandwidth.mjs imports the helpers above.
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((error) => {
    console.error(error);
    process.exit(1);
  });
}
