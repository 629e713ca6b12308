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
  const args = { json: false, runs: 5, threads: 2, promptTokens: 128, genTokens: 128, agreeTokens: 32 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const int = (name) => {
      const value = Number(argv[++i]);
      if (!Number.isSafeInteger(value) || value < 1) throw new Error(`${name} needs a positive integer, got ${argv[i]}`);
      return value;
    };
    if (arg === '--json') args.json = true;
    else if (arg === '--runs') args.runs = int('--runs');
    else if (arg === '--threads') args.threads = int('--threads');
    else throw new Error(`unknown argument ${arg} (known: --json, --runs N, --threads N)`);
  }
  return args;
}

// A fixed public-domain text (KJV Genesis 1), the register scribe-7m was trained on; its first 128 token ids
// under scribe's tokenizer are the prompt of both engines.
const PROMPT_TEXT =
  'In the beginning God created the heaven and the earth. And the earth was without form, and void; and ' +
  'darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters. And God ' +
  'said, Let there be light: and there was light. And God saw the light, that it was good: and God divided ' +
  'the light from the darkness. And God called the light Day, and the darkness he called Night. And the ' +
  'evening and the morning were the first day. And God said, Let there be a firmament in the midst of the ' +
  'waters, and let it divide the waters from the waters. And God made the firmament, and divided the waters ' +
  'which were under the firmament from the waters which were above the firmament: and it was so. And God ' +
  'called the firmament Heaven. And the evening and the morning were the second day.';

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

/** Sum of the weights of a Kiln engine file, from its header (docs/engine-format.md). */
function kilnWeights(engineFile) {
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
    return { total, streamed, fileBytes: fs.statSync(engineFile).size };
  } finally {
    fs.closeSync(fd);
  }
}

/** memcpy bandwidth (Buffer.copy is a memcpy) over `bytes`, best of `reps`, in bytes copied per second. */
function copyBandwidth(bytes, reps) {
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
async function runKiln(engine, ids, count) {
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
async function runLlama(sequence, ids, count) {
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

function cpuModel() {
  try {
    const line = fs.readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('model name'));
    return line ? line.split(':')[1].trim() : os.cpus()[0]?.model ?? 'unknown';
  } catch {
    return os.cpus()[0]?.model ?? 'unknown';
  }
}

const fmt = (value, digits = 1) => value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

function markdown(r) {
  const k = r.kiln;
  const l = r.llamaCpp;
  const ratio = (a, b) => `${fmt(a / b, 2)}×`;
  const gb = (bytesPerSec) => `${fmt(bytesPerSec / 1e9, 1)} GB/s`;
  return [
    `Machine: ${r.machine.cpuModel}, nproc ${r.machine.nproc}, Node ${r.machine.node}; load average ${r.machine.loadAvgBefore.map((v) => fmt(v, 2)).join(' ')} before, ${r.machine.loadAvgAfter.map((v) => fmt(v, 2)).join(' ')} after.`,
    `Kiln engine: target ${r.kiln.isa}, ${r.config.threads} threads. llama.cpp: node-llama-cpp ${r.llamaCpp.version} (llama.cpp ${r.llamaCpp.llamaCppRelease}), prebuilt CPU backend, ${r.config.threads} threads, context ${r.llamaCpp.contextSize}, batch ${r.llamaCpp.batchSize}, flash attention ${r.llamaCpp.flashAttention}.`,
    `Prompt: ${r.config.promptTokens} token ids; ${r.config.genTokens} greedy tokens; median of ${r.config.runs} runs after 1 warm-up, the two engines' runs interleaved.`,
    '',
    '| | Kiln | llama.cpp (node-llama-cpp) | Kiln / llama.cpp |',
    '| --- | ---: | ---: | ---: |',
    `| prefill, ${r.config.promptTokens} tokens (tokens/s) | ${fmt(k.prefillTokensPerSec, 0)} | ${fmt(l.prefillTokensPerSec, 0)} | ${ratio(k.prefillTokensPerSec, l.prefillTokensPerSec)} |`,
    `| prefill time (ms) | ${fmt(k.prefillMsMedian, 2)} | ${fmt(l.prefillMsMedian, 2)} | |`,
    `| decode, ${r.config.genTokens} tokens (tokens/s) | ${fmt(k.decodeTokensPerSec, 0)} | ${fmt(l.decodeTokensPerSec, 0)} | ${ratio(k.decodeTokensPerSec, l.decodeTokensPerSec)} |`,
    `| decode time per token (ms) | ${fmt(k.decodeMsPerToken, 3)} | ${fmt(l.decodeMsPerToken, 3)} | |`,
    `| weights in file (MB) | ${fmt(k.weightBytes / 1e6, 2)} | ${fmt(l.weightBytes / 1e6, 2)} | |`,
    `| weights streamed per decoded token (MB) | ${fmt(k.streamedBytesPerToken / 1e6, 2)} | ${fmt(l.streamedBytesPerToken / 1e6, 2)} | |`,
    `| effective weight bandwidth in decode | ${gb(k.effectiveBytesPerSec)} | ${gb(l.effectiveBytesPerSec)} | ${ratio(k.effectiveBytesPerSec, l.effectiveBytesPerSec)} |`,
    '',
    `memcpy bandwidth of this machine (Buffer.copy, 1 thread, best of 5, bytes copied per second): ${gb(r.machine.copyBandwidth256MB.best)} over 256 MB buffers (DRAM), ${gb(r.machine.copyBandwidth8MB.best)} over 8 MB buffers (cache-resident).`,
    `Greedy agreement: ${r.agreement.firstN}/${r.config.agreeTokens} of the first ${r.config.agreeTokens} generated tokens identical (${r.agreement.all}/${r.config.genTokens} over all ${r.config.genTokens}; first difference at index ${r.agreement.firstDifference ?? 'none'}).`,
  ].join('\n');
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const loadAvgBefore = os.loadavg();
  fs.mkdirSync(outDir, { recursive: true });

  // Both engines from the same bf16 checkpoint. Rebuilt on every run: cheap (well under a second here)
  // and never stale. The builder reuses an engine with the same build hash.
  const ggufFile = path.join(outDir, 'scribe-7m-bf16.gguf');
  const gguf = convertHfToGguf(scribe7mPath, ggufFile);
  const checkpointDir = path.join(outDir, 'kiln-checkpoint');
  const engineDir = path.join(outDir, 'kiln-engine');
  await convertCheckpoint({ modelDir: scribe7mPath, outputDir: checkpointDir, dtype: 'bfloat16' });
  await buildEngine({ checkpointDir, outputDir: engineDir });

  const tokenizer = await Tokenizer.load(scribe7mPath);
  const allIds = tokenizer.encode(PROMPT_TEXT);
  if (allIds.length < args.promptTokens) throw new Error(`the prompt text has ${allIds.length} tokens, fewer than ${args.promptTokens}`);
  const ids = allIds.slice(0, args.promptTokens);
  const count = args.genTokens + 1; // the first token comes from prefill; then genTokens decode steps

  const engine = await Engine.load(engineDir, { numThreads: args.threads });
  const llama = await getLlama({
    gpu: false, // CPU backend only
    build: 'never', // never compile llama.cpp: use the prebuilt binary from the npm package or fail
    skipDownload: true, // never fetch llama.cpp sources
    usePrebuiltBinaries: true,
    progressLogs: false,
    logLevel: LlamaLogLevel.warn,
  });
  const model = await llama.loadModel({ modelPath: ggufFile, gpuLayers: 0 });
  const context = await model.createContext({ contextSize: 512, batchSize: 512, threads: { ideal: args.threads, min: args.threads }, sequences: 1 });
  const sequence = context.getSequence();

  try {
    // One warm-up of each (page-in of the weights, thread pools, allocator), then interleaved measured
    // runs so that load from other processes on this shared machine hits both engines alike.
    await runKiln(engine, ids, count);
    await runLlama(sequence, ids, count);
    const kilnRuns = [];
    const llamaRuns = [];
    for (let i = 0; i < args.runs; i++) {
      kilnRuns.push(await runKiln(engine, ids, count));
      llamaRuns.push(await runLlama(sequence, ids, count));
    }

    // Greedy outputs of the first measured run (every run of one engine gives the same tokens).
    const gen = [kilnRuns[0].tokens, llamaRuns[0].tokens];
    let firstDifference = null;
    let all = 0;
    for (let i = 0; i < args.genTokens; i++) {
      if (gen[0][i] === gen[1][i]) all++;
      else if (firstDifference === null) firstDifference = i;
    }
    const firstN = gen[0].slice(0, args.agreeTokens).filter((t, i) => t === gen[1][i]).length;

    const kw = kilnWeights(path.join(engineDir, 'rank0.engine'));
    const ggufStreamed = gguf.tensorBytes - (gguf.embeddingBytes - gguf.embeddingBytes / gguf.vocab);
    const kiln = summarize(kilnRuns, args.promptTokens, args.genTokens);
    const llamaSummary = summarize(llamaRuns, args.promptTokens, args.genTokens);
    const nodeLlamaCppVersion = JSON.parse(fs.readFileSync(path.join(here, 'node_modules', 'node-llama-cpp', 'package.json'), 'utf8')).version;

    const results = {
      config: { ...args, json: undefined },
      machine: {
        cpuModel: cpuModel(),
        nproc: os.availableParallelism(),
        node: process.version,
        loadAvgBefore,
        loadAvgAfter: os.loadavg(),
        copyBandwidth256MB: copyBandwidth(256 * 1024 * 1024, 5),
        copyBandwidth8MB: copyBandwidth(8 * 1024 * 1024, 5),
      },
      kiln: {
        ...kiln,
        isa: engine.info.isa,
        weightBytes: kw.total,
        engineFileBytes: kw.fileBytes,
        streamedBytesPerToken: kw.streamed,
        effectiveBytesPerSec: kw.streamed * kiln.decodeTokensPerSec,
        tokens: gen[0],
      },
      llamaCpp: {
        ...llamaSummary,
        version: nodeLlamaCppVersion,
        llamaCppRelease: llama.llamaCppRelease.release,
        systemInfo: llama.systemInfo.trim(),
        contextSize: context.contextSize,
        batchSize: context.batchSize,
        flashAttention: context.flashAttention,
        weightBytes: gguf.tensorBytes,
        ggufFileBytes: gguf.fileBytes,
        streamedBytesPerToken: ggufStreamed,
        effectiveBytesPerSec: ggufStreamed * llamaSummary.decodeTokensPerSec,
        tokens: gen[1],
      },
      agreement: { firstN, all, firstDifference },
    };
    results.ratios = {
      prefill: kiln.prefillTokensPerSec / llamaSummary.prefillTokensPerSec,
      decode: kiln.decodeTokensPerSec / llamaSummary.decodeTokensPerSec,
    };
    const report = markdown(results);
    if (args.json) {
      process.stderr.write(`${report}\n`);
      process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
    } else {
      process.stdout.write(`${report}\n`);
    }
  } finally {
    engine.dispose();
    await context.dispose();
    await model.dispose();
    await llama.dispose();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
