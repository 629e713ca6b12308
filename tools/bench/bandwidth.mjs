#!/usr/bin/env node
// Decode on a model that does not fit in cache: Kiln against node-llama-cpp (llama.cpp's prebuilt CPU
// backend) on a random-weight LLaMA of ~0.75 GB bf16 (make-random-llama.mjs), next to this machine's DRAM
// rates. With scribe-7m (13.6 MB, in L3) decode is bound by per-step arithmetic and overhead; here every
// decoded token streams all the matrices from DRAM, so tokens/s × bytes per token can be compared with the
// memory bandwidth. See docs/benchmarks.md ("Decode on a model that does not fit in cache").
//
// Usage: node tools/bench/bandwidth.mjs [--json] [--runs 3] [--threads 2,1] [--layers 8]
//   (after `npm install --prefix tools/bench`, `npx tsc -b tsconfig.build.json` and the native build)

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';
import { convertHfToGguf } from './hf-to-gguf.mjs';
import { makeRandomLlama } from './make-random-llama.mjs';
import { PROMPT_TEXT, agreement, copyBandwidth, cpuModel, kilnWeights, median, parseLlamaPerf, repositoryRevision, runKiln, runLlama } from './run.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const outDir = path.join(here, '.out');
const requireFromRoot = createRequire(path.join(here, '..', '..', 'package.json'));
const { convertCheckpoint } = requireFromRoot('@kiln/convert');
const { buildEngine } = requireFromRoot('@kiln/builder');
const { Engine, Tokenizer } = requireFromRoot('@kiln/runtime');

function parseArgs(argv) {
  const args = { json: false, runs: 3, threads: [2, 1], layers: 8, promptTokens: 32, genTokens: 64 };
  const positive = (name, text) => {
    const value = Number(text);
    if (!Number.isSafeInteger(value) || value < 1 || value > 1024) throw new Error(`${name} needs positive integers, got ${JSON.stringify(text)}`);
    return value;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--json') args.json = true;
    else if (arg === '--runs') args.runs = positive('--runs', argv[++i]);
    else if (arg === '--layers') args.layers = positive('--layers', argv[++i]);
    else if (arg === '--threads') args.threads = String(argv[++i]).split(',').map((t) => positive('--threads', t));
    else throw new Error(`unknown argument ${arg} (known: --json, --runs N, --threads N[,N...], --layers N)`);
  }
  return args;
}

// Each worker scans its own buffer with Buffer#indexOf for a byte that is not there (a memchr: read-only,
// vectorised), so the rate is what `workers` threads can read from memory, the access a decode step makes
// to its weights. A copy (memcpy) also writes, which is why its rate is lower.
const READ_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const buf = Buffer.alloc(workerData.bytes, 1);
buf.indexOf(2);
parentPort.on('message', () => {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < workerData.reps; i++) if (buf.indexOf(2) !== -1) throw new Error('found');
  parentPort.postMessage(Number(process.hrtime.bigint() - t0) / 1e9);
});
parentPort.postMessage('ready');
`;

/** Aggregate read rate of `workers` threads, each scanning its own `bytes` buffer; best of `samples`, bytes/s. */
export async function readBandwidth(workers, bytes, samples) {
  const reps = 4;
  const pool = Array.from({ length: workers }, () => new Worker(READ_WORKER, { eval: true, workerData: { bytes, reps } }));
  try {
    await Promise.all(pool.map((w) => new Promise((resolve, reject) => { w.once('message', resolve); w.once('error', reject); })));
    const rates = [];
    for (let s = 0; s < samples; s++) {
      const times = await Promise.all(pool.map((w) => new Promise((resolve, reject) => { w.once('message', resolve); w.once('error', reject); w.postMessage('go'); })));
      rates.push((workers * bytes * reps) / Math.max(...times));
    }
    return { best: Math.max(...rates), median: median(rates) };
  } finally {
    await Promise.all(pool.map((w) => w.terminate()));
  }
}

const startedAt = performance.now();
function progress(message) {
  process.stderr.write(`[bandwidth ${((performance.now() - startedAt) / 1000).toFixed(1)}s] ${message}\n`);
}

const fmt = (value, digits = 1) => value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
const ENGINES = [
  { key: 'kiln', label: 'Kiln' },
  { key: 'llama', label: 'llama.cpp (FA off)' },
];

function markdown(r) {
  const m = r.machine;
  const lines = [
    `Machine: ${m.cpuModel}, nproc ${m.nproc}, Node ${m.node}; load average ${m.loadAvgBefore.map((v) => fmt(v, 2)).join(' ')} before, ${m.loadAvgAfter.map((v) => fmt(v, 2)).join(' ')} after.`,
    `Kiln ${m.kilnRevision}, engine target ${r.kilnIsa}; llama.cpp: node-llama-cpp ${r.llamaCpp.version} (release ${r.llamaCpp.llamaCppRelease}), flash attention off.`,
    `Model: random LLaMA, ${r.model.layers} layers, hidden ${r.model.hidden}, intermediate ${r.model.intermediate}, ${fmt(r.model.parameters / 1e6, 1)} M parameters, bf16.`,
    `Streamed per decoded token (all weights but the embedding table, of which one row): Kiln ${fmt(r.weights.kiln.streamed / 1e6, 1)} MB, GGUF ${fmt(r.weights.gguf.streamed / 1e6, 1)} MB.`,
    `Prompt ${r.config.promptTokens} ids, ${r.config.genTokens + 1} greedy tokens (1 from prefill + ${r.config.genTokens} decode steps); median of ${r.config.runs} runs after 1 warm-up, engines interleaved.`,
    `DRAM (256 MB buffers, best of 5): read (memchr) ${fmt(m.read1 / 1e9)} GB/s on 1 thread, ${fmt(m.read2 / 1e9)} GB/s on 2; memcpy ${fmt(m.copy / 1e9)} GB/s copied (1 thread).`,
    '',
    '| threads | engine | decode tok/s | ms / token | llama_perf ms / token | weight bandwidth | % of DRAM read | Kiln / llama.cpp |',
    '| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const t of r.byThreads) {
    const read = t.threads === 1 ? m.read1 : m.read2;
    for (const e of ENGINES) {
      const x = t.engines[e.key];
      const perf = x.llamaCppInternal?.eval ? fmt(x.llamaCppInternal.eval.msPerToken, 1) : '–';
      const ratio = e.key === 'kiln' ? `${fmt(t.ratio, 2)}×` : '';
      lines.push(`| ${t.threads} | ${e.label} | ${fmt(x.decodeTokensPerSec, 2)} | ${fmt(x.decodeMsPerToken, 1)} | ${perf} | ${fmt(x.effectiveBytesPerSec / 1e9)} GB/s | ${fmt((100 * x.effectiveBytesPerSec) / read, 0)}% | ${ratio} |`);
    }
  }
  lines.push('');
  for (const t of r.byThreads) {
    const a = t.agreement;
    lines.push(`Greedy agreement, ${t.threads} thread(s): ${a.all}/${r.config.genTokens + 1} tokens, first difference at ${a.firstDifference ?? 'none'}.`);
  }
  return lines.join('\n');
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const loadAvgBefore = os.loadavg();

  progress('writing the random model (reused when present), the GGUF and the Kiln engine');
  const modelDir = path.join(outDir, 'random-llama');
  const made = makeRandomLlama(modelDir, { layers: args.layers });
  const ggufFile = path.join(outDir, 'random-llama-bf16.gguf');
  const gguf = await convertHfToGguf(modelDir, ggufFile);
  const checkpointDir = path.join(outDir, 'random-llama-kiln-checkpoint');
  const engineDir = path.join(outDir, 'random-llama-kiln-engine');
  await convertCheckpoint({ modelDir, outputDir: checkpointDir, dtype: 'bfloat16' });
  await buildEngine({ checkpointDir, outputDir: engineDir });
  const config = JSON.parse(fs.readFileSync(path.join(modelDir, 'config.json'), 'utf8'));

  const tokenizer = await Tokenizer.load(modelDir);
  const ids = tokenizer.encode(PROMPT_TEXT).slice(0, args.promptTokens);
  if (ids.length < args.promptTokens) throw new Error(`the prompt text has fewer than ${args.promptTokens} tokens`);
  const count = args.genTokens + 1;
  const weights = {
    kiln: kilnWeights(path.join(engineDir, 'rank0.engine')),
    gguf: { total: gguf.tensorBytes, streamed: gguf.tensorBytes - (gguf.embeddingBytes - gguf.embeddingBytes / gguf.vocab) },
  };

  progress('loading node-llama-cpp');
  const llamaLog = [];
  const llama = await getLlama({
    gpu: false,
    build: 'never',
    skipDownload: true,
    usePrebuiltBinaries: true,
    progressLogs: false,
    logLevel: LlamaLogLevel.info,
    logger: (level, message) => {
      llamaLog.push(message);
      if (level === LlamaLogLevel.warn || level === LlamaLogLevel.error || level === LlamaLogLevel.fatal) process.stderr.write(`[llama.cpp] ${message}\n`);
    },
    maxThreads: 0,
  });
  const model = await llama.loadModel({ modelPath: ggufFile, gpuLayers: 0 });
  const llamaInfo = {
    version: JSON.parse(fs.readFileSync(path.join(here, 'node_modules', 'node-llama-cpp', 'package.json'), 'utf8')).version,
    llamaCppRelease: llama.llamaCppRelease.release,
    systemInfo: llama.systemInfo.trim(),
  };

  const byThreads = [];
  let kilnIsa;
  try {
    for (const threads of args.threads) {
      const engine = await Engine.load(engineDir, { numThreads: threads, enableBlockReuse: false });
      kilnIsa = engine.info.isa;
      // Flash attention off: the faster llama.cpp decode on scribe-7m; at <= 97 positions attention is a
      // negligible part of a step of this model either way.
      const context = await model.createContext({ contextSize: 512, batchSize: 512, threads, flashAttention: false, sequences: 1, performanceTracking: true });
      try {
        const sequence = context.getSequence();
        const run = { kiln: () => runKiln(engine, ids, count), llama: () => runLlama(sequence, ids, count) };
        progress(`${threads} thread(s): warm-up`);
        for (const e of ENGINES) await run[e.key]();
        await context.printTimings(); // resets llama.cpp's counters
        const runs = { kiln: [], llama: [] };
        for (let i = 0; i < args.runs; i++) {
          progress(`${threads} thread(s): run ${i + 1} of ${args.runs}`);
          for (const e of ENGINES) runs[e.key].push(await run[e.key]());
        }
        llamaLog.length = 0;
        await context.printTimings();
        const internal = parseLlamaPerf(llamaLog.join('\n'));
        const engines = {};
        for (const e of ENGINES) {
          const decodeMs = runs[e.key].map((r) => r.times[args.genTokens] - r.times[0]);
          const d = median(decodeMs);
          const tokensPerSec = (args.genTokens * 1000) / d;
          const streamed = e.key === 'kiln' ? weights.kiln.streamed : weights.gguf.streamed;
          engines[e.key] = {
            decodeMsRuns: decodeMs,
            decodeTokensPerSec: tokensPerSec,
            decodeMsPerToken: d / args.genTokens,
            prefillMsMedian: median(runs[e.key].map((r) => r.times[0] - r.t0)),
            effectiveBytesPerSec: streamed * tokensPerSec,
            llamaCppInternal: e.key === 'llama' ? internal : undefined,
            tokens: runs[e.key][0].tokens,
          };
          for (const r of runs[e.key]) {
            if (r.tokens.join() !== runs[e.key][0].tokens.join()) throw new Error(`${e.label}: greedy output differs between runs`);
          }
        }
        byThreads.push({
          threads,
          engines,
          ratio: engines.kiln.decodeTokensPerSec / engines.llama.decodeTokensPerSec,
          agreement: agreement(engines.kiln.tokens, engines.llama.tokens, count),
        });
      } finally {
        engine.dispose();
        await context.dispose();
      }
    }
  } finally {
    await model.dispose();
    await llama.dispose();
  }

  progress('measuring DRAM read and copy rates');
  const results = {
    config: { runs: args.runs, threads: args.threads, promptTokens: args.promptTokens, genTokens: args.genTokens },
    model: { layers: config.num_hidden_layers, hidden: config.hidden_size, intermediate: config.intermediate_size, parameters: made.parameters, safetensorsBytes: made.fileBytes },
    machine: {
      cpuModel: cpuModel(),
      nproc: os.availableParallelism(),
      node: process.version,
      kilnRevision: repositoryRevision(),
      loadAvgBefore,
      loadAvgAfter: os.loadavg(),
      read1: (await readBandwidth(1, 256 * 1024 * 1024, 5)).best,
      read2: (await readBandwidth(2, 256 * 1024 * 1024, 5)).best,
      copy: copyBandwidth(256 * 1024 * 1024, 5).best,
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

// Run only as a script: cpu-side-by-side.mjs imports readBandwidth.
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((error) => {
    console.error(error);
    process.exit(1);
  });
}
