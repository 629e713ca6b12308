#!/usr/bin/env node
// Issue 12's side-by-side: Kiln against llama.cpp (node-llama-cpp's prebuilt CPU backend, which loads its
// Zen 4 build here) on a TinyLlama-1.1B-shaped LLaMA with random weights (22 layers, hidden 2048, MLP 5632,
// 32 heads, 4 KV heads, vocab 32000 as the issue asks), the same float weights for both:
// Kiln converts the Hugging Face folder, llama.cpp reads a GGUF that `exportGguf` writes from Kiln's
// checkpoint of it. One pairing per precision:
//   16-bit: Kiln bfloat16 engine, bfloat16 linear inputs   vs  GGUF BF16 (the same bits)
//   8-bit:  Kiln int8 weight-only (per-channel scales)     vs  GGUF Q8_0
//   4-bit:  Kiln int4 weight-only (group 32, decision 0014)  vs  GGUF Q4_0
// Figures, at each thread count: decode tokens/s at batch 1 (128-token prompt, 128 new tokens), prefill
// tokens/s of a 512-token prompt (call to first token), and each engine's peak RSS. llama.cpp runs with
// flash attention off and on and is credited with its better figure. Every engine lives in its own child
// process (so RSS and thread pools are its own); runs alternate engine by engine, and each figure is the
// median of --runs runs after one warm-up. A streaming-read probe (memchr over 256 MB buffers, one worker
// thread per compute thread) in the same run gives the decode bound: read bytes/s / bytes streamed per token.
//
// Usage: node tools/bench/cpu-side-by-side.mjs [--json] [--runs 5] [--threads 2,1] [--precisions 16,8,4]
//          [--flash-attention off,on] [--layers 22] [--vocab 32000]
//   --vocab: TinyLlama's 32000 by default, with scribe-7m's tokenizer padded to 32000 entries
//     (make-random-llama.mjs's paddedTokenizer: filler tokens no text encodes to; the prompts are token ids),
//     so both runtimes hold a 32000-entry vocabulary and [32000, 2048] embedding and LM head. --vocab 4096
//     is sessions 4-7's model (scribe-7m's tokenizer as is) and keeps those files' names in tools/bench/.out.
//   (after `npm ci`: the repository's packages built, node-llama-cpp installed as a dev dependency.)
// Results go to docs/benchmarks.md with the machine, command, date and load average.

import { fork } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { makeRandomLlama } from './make-random-llama.mjs';
import { readBandwidth } from './bandwidth.mjs';
import { cpuModel, kilnWeights, median, repositoryRevision } from './run.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const outDir = path.join(here, '.out');
const requireFromRoot = createRequire(path.join(here, '..', '..', 'package.json'));

// The pairings: Kiln's build options on the bfloat16 checkpoint, and the GGUF type made from the same
// float weights. The 16-bit Kiln engine reads bfloat16 linear inputs, as llama.cpp's BF16 matmuls do (they
// convert activations to bfloat16); int8 is weight-only (float32 inputs), where Q8_0 also quantizes the
// activations to 8 bits; int4 group 32 is Q4_0's block (32 weights, one scale), weight-only too.
const PRECISIONS = {
  16: { label: '16-bit', build: { bf16LinearInputs: true }, kilnName: 'bf16', gguf: 'bf16' },
  8: { label: '8-bit', build: { quantization: 'int8' }, kilnName: 'int8', gguf: 'q8_0' },
  4: { label: '4-bit', build: { quantization: 'int4', groupSize: 32 }, kilnName: 'int4', gguf: 'q4_0' },
};
const SCRIBE_VOCAB = 4096; // scribe-7m's tokenizer, which make-random-llama.mjs copies or pads

function parseArgs(argv) {
  const args = { json: false, runs: 5, threads: [2, 1], precisions: [16, 8, 4], flashAttention: [false, true], layers: 22, vocab: 32000, promptTokens: 128, genTokens: 128, prefillTokens: 512 };
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
    else if (arg === '--vocab') {
      // Not through positive(): vocabularies run past 1024. Below scribe-7m's 4096 its tokenizer would give
      // ids outside the model.
      const value = Number(argv[++i]);
      if (!Number.isSafeInteger(value) || value < SCRIBE_VOCAB || value > 262144) throw new Error(`--vocab takes an integer in [${SCRIBE_VOCAB}, 262144], got ${JSON.stringify(argv[i])}`);
      args.vocab = value;
    }
    else if (arg === '--threads') args.threads = String(argv[++i]).split(',').map((t) => positive('--threads', t));
    else if (arg === '--precisions') {
      args.precisions = String(argv[++i]).split(',').map((p) => {
        if (!PRECISIONS[p]) throw new Error(`--precisions takes 16, 8 and 4, got ${JSON.stringify(p)}`);
        return Number(p);
      });
    } else if (arg === '--flash-attention') {
      args.flashAttention = String(argv[++i]).split(',').map((v) => {
        if (v !== 'on' && v !== 'off') throw new Error(`--flash-attention takes off and on, got ${JSON.stringify(v)}`);
        return v === 'on';
      });
    } else throw new Error(`unknown argument ${arg} (known: --json, --runs N, --threads N[,N], --precisions 16[,8,4], --flash-attention off[,on], --layers N, --vocab N)`);
  }
  return args;
}

// ---------------------------------------------------------------------------------------------------
// Child processes: one engine each, answering {op: 'run', ids, count} with the call's timestamps.

async function kilnChild(engineDir, threads) {
  const { Engine } = requireFromRoot('@kiln/runtime');
  // llama.cpp's sequence is cleared before every run, so Kiln's prefix cache is off: both do all the work.
  const engine = await Engine.load(engineDir, { numThreads: threads, enableBlockReuse: false });
  return {
    info: { device: engine.info.device },
    async run(ids, count) {
      const times = [];
      const t0 = performance.now();
      const result = await engine.generate(ids, { maxTokens: count, ignoreEos: true, onToken: () => times.push(performance.now()) });
      if (result.outputIds.length !== count) throw new Error(`Kiln generated ${result.outputIds.length} tokens, expected ${count}`);
      return { t0, times, tokens: Array.from(result.outputIds) };
    },
  };
}

async function llamaChild(ggufFile, threads, flashAttention) {
  const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
  const llama = await getLlama({ gpu: false, build: 'never', skipDownload: true, usePrebuiltBinaries: true, progressLogs: false, logLevel: LlamaLogLevel.error, maxThreads: 0 });
  const model = await llama.loadModel({ modelPath: ggufFile, gpuLayers: 0 });
  const context = await model.createContext({ contextSize: 1024, batchSize: 512, threads, flashAttention, sequences: 1 });
  const sequence = context.getSequence();
  return {
    info: { llamaCppRelease: llama.llamaCppRelease.release, systemInfo: llama.systemInfo.trim() },
    async run(ids, count) {
      await sequence.clearHistory();
      const times = [];
      const tokens = [];
      const t0 = performance.now();
      for await (const token of sequence.evaluate(ids, { temperature: 0, yieldEogToken: true })) {
        times.push(performance.now());
        tokens.push(token);
        if (tokens.length === count) break; // the last sampled token is not evaluated, as in Kiln
      }
      if (tokens.length !== count) throw new Error(`node-llama-cpp generated ${tokens.length} tokens, expected ${count}`);
      return { t0, times, tokens };
    },
  };
}

async function childMain(kind, file, threads, flashAttention) {
  const engine = kind === 'kiln' ? await kilnChild(file, Number(threads)) : await llamaChild(file, Number(threads), flashAttention === 'on');
  process.on('message', async (message) => {
    try {
      const r = await engine.run(message.ids, message.count);
      process.send({ ok: true, ...r, maxRssBytes: process.resourceUsage().maxRSS * 1024 });
    } catch (error) {
      process.send({ ok: false, error: String(error?.stack ?? error) });
    }
  });
  process.send({ ready: true, info: engine.info });
}

/** Starts an engine's child process; resolves to { info, run(ids, count), close() } once it has loaded. */
function startChild(args) {
  const child = fork(fileURLToPath(import.meta.url), ['--child', ...args], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  let pending = null;
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => {
      const error = new Error(`child ${args.join(' ')} exited with ${code}`);
      if (pending) pending.reject(error);
      else reject(error);
    });
    child.on('message', (m) => {
      if (m.ready) {
        resolve({
          info: m.info,
          run: (ids, count) => new Promise((res, rej) => { pending = { resolve: res, reject: rej }; child.send({ ids, count }); }),
          close: () => new Promise((res) => { child.removeAllListeners('exit'); child.once('exit', res); child.kill(); }),
        });
      } else if (pending) {
        const p = pending;
        pending = null;
        if (m.ok) p.resolve(m);
        else p.reject(new Error(m.error));
      }
    });
  });
}

// ---------------------------------------------------------------------------------------------------

/** Deterministic token ids (the weights are random, so any ids will do), the same for both engines. */
function promptIds(n, vocab, seed) {
  let x = seed >>> 0 || 1;
  return Array.from({ length: n }, () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return 16 + ((x >>> 0) % (vocab - 32));
  });
}

const fmt = (value, digits = 1) => (Number.isFinite(value) ? value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : 'n/a');
const startedAt = performance.now();
const progress = (message) => process.stderr.write(`[side-by-side ${((performance.now() - startedAt) / 1000).toFixed(0)}s] ${message}\n`);

/**
 * A GGUF file's tensors (the native reader's table) and the bytes one decode step streams from it: every
 * tensor but the embedding table, of which one row, as kilnWeights counts Kiln's. (The whole file was used
 * before; at vocab 32000 the embedding table is 6% of it and would have flattered llama.cpp's bound.)
 */
async function ggufWeights(file) {
  const info = await requireFromRoot('@kiln/native').loadNative().readGguf(file);
  const tokens = info.metadata.find((e) => e.key === 'tokenizer.ggml.tokens');
  const total = info.tensors.reduce((sum, t) => sum + t.byteLength, 0);
  const embedding = info.tensors.find((t) => t.name === 'token_embd.weight');
  const streamed = total - (embedding ? embedding.byteLength - embedding.byteLength / embedding.shape[0] : 0);
  return { tensors: info.tensors, tokenizerEntries: tokens?.value?.length, streamed };
}

/**
 * Both runtimes must hold the model's whole vocabulary: [vocab, hidden] embedding and LM head in the Kiln
 * engine and in the GGUF (row-major shapes), a tokenizer.json and a tokenizer.ggml.tokens of vocab entries.
 * Throws otherwise, so a table is never measured on a model other than the one it names.
 */
function checkVocabulary(vocab, hidden, engineDir, kw, gguf) {
  const problems = [];
  const expect = (what, shape) => {
    if (!shape || shape.length !== 2 || shape[0] !== vocab || shape[1] !== hidden) problems.push(`${what} is ${JSON.stringify(shape)}, not [${vocab}, ${hidden}]`);
  };
  expect('Kiln embedding', kw.weights.find((w) => /embed/i.test(w.name))?.shape);
  expect('Kiln LM head', kw.weights.find((w) => /lm_head/i.test(w.name))?.shape);
  expect('GGUF token_embd.weight', gguf.tensors.find((t) => t.name === 'token_embd.weight')?.shape);
  expect('GGUF output.weight', gguf.tensors.find((t) => t.name === 'output.weight')?.shape);
  const kilnTokenizer = JSON.parse(fs.readFileSync(path.join(engineDir, 'tokenizer.json'), 'utf8'));
  const kilnEntries = Object.keys(kilnTokenizer.model.vocab).length;
  if (kilnEntries !== vocab) problems.push(`Kiln's tokenizer.json has ${kilnEntries} entries`);
  if (gguf.tokenizerEntries !== vocab) problems.push(`the GGUF's tokenizer.ggml.tokens has ${gguf.tokenizerEntries} entries`);
  if (problems.length > 0) throw new Error(`vocabulary ${vocab}: ${problems.join('; ')}`);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const { convertCheckpoint, exportGguf } = requireFromRoot('@kiln/convert');
  const { buildEngine } = requireFromRoot('@kiln/builder');
  const loadAvgBefore = os.loadavg();
  fs.mkdirSync(outDir, { recursive: true });

  // TinyLlama-1.1B's shape (22 layers, hidden 2048, MLP 5632, 32 heads, 4 KV heads, vocab 32000). Files of
  // another vocabulary than scribe-7m's 4096 carry it in their names; 4096 keeps the names of sessions 4-7.
  const tag = args.vocab === SCRIBE_VOCAB ? `${args.layers}` : `${args.layers}-v${args.vocab}`;
  const modelDir = path.join(outDir, `random-llama-${tag}`);
  progress(`model ${modelDir}`);
  makeRandomLlama(modelDir, { layers: args.layers, heads: 32, vocab: args.vocab, padTokenizer: args.vocab !== SCRIBE_VOCAB });
  const hf = JSON.parse(fs.readFileSync(path.join(modelDir, 'config.json'), 'utf8'));
  const floatCheckpoint = path.join(outDir, `side-by-side-${tag}-bf16-checkpoint`);
  if (!fs.existsSync(path.join(floatCheckpoint, 'config.json'))) await convertCheckpoint({ modelDir, outputDir: floatCheckpoint, dtype: 'bfloat16' });

  const decodeIds = promptIds(args.promptTokens, hf.vocab_size, 1);
  const prefillIds = promptIds(args.prefillTokens, hf.vocab_size, 2);
  const results = [];
  for (const p of args.precisions) {
    const pairing = PRECISIONS[p];
    const engineDir = path.join(outDir, `side-by-side-${tag}-${pairing.kilnName}-engine`);
    const ggufFile = path.join(outDir, `side-by-side-${tag}-${pairing.gguf}.gguf`);
    progress(`${pairing.label}: Kiln checkpoint and engine, GGUF ${pairing.gguf}`);
    await buildEngine({ checkpointDir: floatCheckpoint, outputDir: engineDir, config: { maxBatchSize: 1, maxSeqLen: 1024, maxNumTokens: 512, gatherContextLogits: false, ...pairing.build } });
    if (!fs.existsSync(ggufFile)) await exportGguf({ checkpointDir: floatCheckpoint, outputFile: ggufFile, type: pairing.gguf });
    const kw = kilnWeights(path.join(engineDir, 'rank0.engine'));
    const gguf = await ggufWeights(ggufFile);
    checkVocabulary(args.vocab, hf.hidden_size, engineDir, kw, gguf);
    const streamed = { kiln: kw.streamed, llama: gguf.streamed };

    for (const threads of args.threads) {
      progress(`${pairing.label}, ${threads} thread(s): streaming-read probe`);
      const readBytesPerSec = (await readBandwidth(threads, 256 * 1024 * 1024, 5)).best;
      const engines = [{ key: 'kiln', label: `Kiln ${pairing.kilnName}`, args: ['kiln', engineDir, String(threads)] }];
      for (const fa of args.flashAttention) {
        engines.push({ key: `llama-fa-${fa ? 'on' : 'off'}`, label: `llama.cpp ${pairing.gguf.toUpperCase()} FA ${fa ? 'on' : 'off'}`, args: ['llama', ggufFile, String(threads), fa ? 'on' : 'off'] });
      }
      for (const e of engines) {
        e.child = await startChild(e.args);
        e.prefillMs = [];
        e.decodeMs = [];
      }
      try {
        const loadDuring = [];
        for (let i = 0; i <= args.runs; i++) {
          progress(`${pairing.label}, ${threads} thread(s): ${i === 0 ? 'warm-up' : `run ${i} of ${args.runs}`}`);
          for (const e of engines) {
            const pre = await e.child.run(prefillIds, 1);
            const dec = await e.child.run(decodeIds, args.genTokens + 1);
            e.maxRssBytes = dec.maxRssBytes;
            if (i === 0) {
              e.tokens = dec.tokens;
              continue; // the warm-up pages the weights in and starts the thread pools
            }
            e.prefillMs.push(pre.times[0] - pre.t0);
            e.decodeMs.push(dec.times[args.genTokens] - dec.times[0]);
          }
          loadDuring.push(os.loadavg()[0]);
        }
        const figures = engines.map((e) => ({
          key: e.key,
          label: e.label,
          info: e.child.info,
          prefillTokensPerSec: (args.prefillTokens * 1000) / median(e.prefillMs),
          decodeTokensPerSec: (args.genTokens * 1000) / median(e.decodeMs),
          prefillMsRuns: e.prefillMs,
          decodeMsRuns: e.decodeMs,
          maxRssBytes: e.maxRssBytes,
          streamedBytesPerToken: e.key === 'kiln' ? streamed.kiln : streamed.llama,
          tokens: e.tokens,
        }));
        const kiln = figures[0];
        const llamas = figures.slice(1);
        const best = (f) => Math.max(...llamas.map(f));
        results.push({
          precision: pairing.label,
          threads,
          readBytesPerSec,
          loadAverage1mDuringRuns: loadDuring,
          engines: figures,
          ratios: { decode: kiln.decodeTokensPerSec / best((e) => e.decodeTokensPerSec), prefill: kiln.prefillTokensPerSec / best((e) => e.prefillTokensPerSec) },
          kilnDecodeBoundFraction: (kiln.decodeTokensPerSec * streamed.kiln) / readBytesPerSec,
        });
        progress(`${pairing.label}, ${threads} thread(s): Kiln decode ${fmt(kiln.decodeTokensPerSec, 2)} tok/s, prefill ${fmt(kiln.prefillTokensPerSec, 1)} tok/s; ` +
          `llama.cpp best ${fmt(best((e) => e.decodeTokensPerSec), 2)} / ${fmt(best((e) => e.prefillTokensPerSec), 1)}`);
      } finally {
        for (const e of engines) await e.child?.close();
      }
    }
  }

  const report = markdown({ args, results, machine: { cpuModel: cpuModel(), nproc: os.availableParallelism(), totalMemGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, kilnRevision: repositoryRevision(), loadAvgBefore, loadAvgAfter: os.loadavg(), date: new Date().toISOString() }, hf });
  if (args.json) {
    process.stderr.write(`${report}\n`);
    process.stdout.write(`${JSON.stringify({ args, results }, null, 2)}\n`);
  } else {
    process.stdout.write(`${report}\n`);
  }
}

function markdown({ args, results, machine, hf }) {
  const m = machine;
  const lines = [
    `Machine: ${m.cpuModel}, nproc ${m.nproc}, ${m.totalMemGiB} GiB RAM, Node ${m.node}; ${m.date}; load average ${m.loadAvgBefore.map((v) => fmt(v, 2)).join(' ')} before, ${m.loadAvgAfter.map((v) => fmt(v, 2)).join(' ')} after.`,
    `Kiln ${m.kilnRevision}. Model: random LLaMA, ${hf.num_hidden_layers} layers, hidden ${hf.hidden_size}, MLP ${hf.intermediate_size}, ${hf.num_attention_heads} heads / ${hf.num_key_value_heads} KV heads, vocab ${hf.vocab_size}${hf.vocab_size > SCRIBE_VOCAB ? ` (scribe-7m's ${SCRIBE_VOCAB}-entry tokenizer and ${hf.vocab_size - SCRIBE_VOCAB} filler tokens, in both runtimes)` : " (scribe-7m's tokenizer)"}.`,
    `Decode: ${args.promptTokens}-token prompt, ${args.genTokens} new tokens after the first (batch 1). Prefill: ${args.prefillTokens}-token prompt, call to first token. Medians of ${args.runs} runs after a warm-up, engines alternating, each in its own process.`,
    '',
    '| precision | threads | engine | decode tok/s | prefill tok/s | peak RSS | decode GB/s streamed | read bound tok/s | load avg (1 min) |',
    '| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |',
  ];
  for (const r of results) {
    for (const e of r.engines) {
      lines.push(`| ${r.precision} | ${r.threads} | ${e.label}${e.key === 'kiln' ? ` (${e.info.device})` : ''} | ${fmt(e.decodeTokensPerSec, 2)} | ${fmt(e.prefillTokensPerSec, 1)} | ${fmt(e.maxRssBytes / 2 ** 30, 2)} GiB | ${fmt((e.decodeTokensPerSec * e.streamedBytesPerToken) / 1e9, 1)} | ${fmt(r.readBytesPerSec / e.streamedBytesPerToken, 2)} | ${r.loadAverage1mDuringRuns.map((v) => fmt(v, 1)).join(' ')} |`);
    }
    lines.push(`| ${r.precision} | ${r.threads} | **Kiln / best llama.cpp** | **${fmt(r.ratios.decode, 2)}×** | **${fmt(r.ratios.prefill, 2)}×** | | Kiln at ${fmt(100 * r.kilnDecodeBoundFraction, 0)}% of the read bound (${fmt(r.readBytesPerSec / 1e9, 1)} GB/s) | | |`);
  }
  return lines.join('\n');
}

if (process.argv[2] === '--child') {
  childMain(process.argv[3], process.argv[4], process.argv[5], process.argv[6]).catch((error) => {
    console.error(error);
    process.exit(1);
  });
} else if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((error) => {
    console.error(error);
    process.exit(1);
  });
}
