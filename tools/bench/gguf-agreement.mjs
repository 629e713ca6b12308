#!/usr/bin/env node
// GGUF export agreement (issue 13): a Hugging Face model converted to a Kiln checkpoint, exported by
// `exportGguf` as each GGUF type, then run greedily by Kiln (the GGUF imported back) and by llama.cpp
// (node-llama-cpp's prebuilt CPU binary, on the same file). Agreement is teacher-forced: llama.cpp is fed
// Kiln's tokens and its greedy choice at each position is compared with Kiln's, so one early difference
// does not derail the rest. Prints one line per type and a JSON summary; docs/benchmarks.md records runs.
//
// Usage: node tools/bench/gguf-agreement.mjs [hf-model-dir] [--types q8_0,q4_0] [--tokens 24] [--dtype float32]
//          [--quantization q8_0] [--prompts 4|...|16] [--llama-flash-attention auto|on|off]
//   --dtype: the dtype Kiln imports the GGUF as (default: the import's default, float16; float32 with
//     --quantization q8_0, so that the Q8_0/Q4_0 values are kept exactly)
//   --quantization q8_0: Kiln's engine keeps the file's Q8_0/Q4_0 blocks and quantizes linear inputs as
//     llama.cpp's CPU does (decision 0016); without it the weights run dequantized to --dtype.
//   --llama-flash-attention: llama.cpp's attention path (default: node-llama-cpp's default, "auto", which
//     turns flash attention on for the CPU); q8_0 engines reproduce llama.cpp's attention with it off.
//   default model: tools/bench/.out/random-llama-22 (22 layers, 32 heads: the
//   TinyLlama-1.1B shape of the GPU benchmark, vocab 4096). Needs `npm run build` and node-llama-cpp
//   (a dev dependency of @kiln/convert).
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeRandomLlama } from './make-random-llama.mjs';

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.join(here, '..', '..');
const { convertCheckpoint, exportGguf } = require(path.join(repo, 'packages/convert'));
const { buildEngine } = require(path.join(repo, 'packages/builder'));
const { LLM } = require(path.join(repo, 'packages/runtime'));
// The first four are the issue's 4 prompts x 24 tokens; --prompts 16 adds twelve more, so that the
// agreement of near-tied random-weight models is estimated from 384 positions rather than 96.
const ALL_PROMPTS = [
  'And the LORD said unto Moses,', 'In the beginning God', 'And it came to pass, when', 'Blessed are they that',
  'Now the serpent was more subtil', 'The LORD is my shepherd;', 'And God said, Let there be', 'Hear, O Israel:',
  'For God so loved the world,', 'And Jesus answered and said', 'Vanity of vanities, saith', 'Then came the word of the LORD',
  'And the earth was without form,', 'Thus saith the Lord GOD;', 'And Moses went up unto God,', 'O give thanks unto the LORD;',
];
let PROMPTS = ALL_PROMPTS.slice(0, 4);

const argv = process.argv.slice(2);
let modelDir;
let types = ['q8_0', 'q4_0'];
let maxTokens = 24;
let dtype;
let quantization;
let flashAttention;
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--types') types = argv[++i].split(',');
  else if (argv[i] === '--tokens') maxTokens = Number(argv[++i]);
  else if (argv[i] === '--dtype') dtype = argv[++i];
  else if (argv[i] === '--quantization') quantization = argv[++i];
  else if (argv[i] === '--llama-flash-attention') {
    const v = argv[++i];
    if (v !== 'auto') flashAttention = v === 'on';
  }
  else if (argv[i] === '--prompts') PROMPTS = ALL_PROMPTS.slice(0, Math.max(1, Math.min(ALL_PROMPTS.length, Number(argv[++i]))));
  else modelDir = argv[i];
}
if (quantization && !dtype) dtype = 'float32';
if (!modelDir) {
  modelDir = path.join(here, '.out', 'random-llama-22');
  makeRandomLlama(modelDir, { layers: 22, heads: 32 }); // TinyLlama-1.1B's layers and heads
}

function llamaCpp(gguf, request) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(repo, 'packages/cli/test/llama-cpp-greedy.mjs'), gguf, JSON.stringify(request)]);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => (code === 0 ? resolve(JSON.parse(stdout)) : reject(new Error(`node-llama-cpp exited ${code}: ${stderr}`))));
  });
}

const work = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-gguf-agreement-'));
try {
  const checkpoint = path.join(work, 'checkpoint');
  await convertCheckpoint({ modelDir, outputDir: checkpoint });
  const summary = {};
  for (const type of types) {
    const gguf = path.join(work, `model-${type}.gguf`);
    const exported = await exportGguf({ checkpointDir: checkpoint, outputFile: gguf, type });
    const imported = path.join(work, `imported-${type}`);
    await convertCheckpoint({ modelFile: gguf, outputDir: imported, dtype });
    const engine = path.join(work, `engine-${type}`);
    const built = await buildEngine({
      checkpointDir: imported,
      outputDir: engine,
      config: { maxBatchSize: 1, maxSeqLen: 128, maxNumTokens: 128, gatherContextLogits: true, ...(quantization ? { quantization } : {}) },
    });
    const blocks = (built.quantization ?? []).reduce((a, q) => [a[0] + (q.losslessBlocks ?? 0), a[1] + (q.blocks ?? 0)], [0, 0]);
    const llm = await LLM.load(engine, { numThreads: os.availableParallelism() });
    const kilnTokens = [];
    const promptIds = [];
    for (const prompt of PROMPTS) {
      promptIds.push(llm.tokenizer.encode(prompt));
      kilnTokens.push((await llm.generate(prompt, { maxTokens, ignoreEos: true })).outputIds);
    }
    const { predicted } = await llamaCpp(gguf, { prompts: promptIds, maxTokens, forced: kilnTokens, ...(flashAttention !== undefined ? { flashAttention } : {}) });
    let same = 0;
    kilnTokens.forEach((tokens, i) => tokens.forEach((t, j) => (same += predicted[i][j] === t ? 1 : 0)));
    // Where the engines part: Kiln's logit of its own choice minus that of llama.cpp's, against the gap
    // between Kiln's two best logits at every position (how close the calls are).
    const gaps = [];
    const topGaps = [];
    for (const [i, tokens] of kilnTokens.entries()) {
      const { contextLogits } = await llm.generate([...promptIds[i], ...tokens], { maxTokens: 1, returnContextLogits: true });
      const vocab = contextLogits.length / (promptIds[i].length + tokens.length);
      tokens.forEach((t, j) => {
        const row = contextLogits.subarray((promptIds[i].length - 1 + j) * vocab, (promptIds[i].length + j) * vocab);
        const sorted = Array.from(row).sort((a, b) => b - a);
        topGaps.push(sorted[0] - sorted[1]);
        if (predicted[i][j] !== t) gaps.push(row[t] - row[predicted[i][j]]);
      });
    }
    await llm.dispose();
    topGaps.sort((a, b) => a - b);
    const medianTopGap = topGaps[Math.floor(topGaps.length / 2)];
    const total = kilnTokens.length * maxTokens;
    const worst = exported.errors.reduce((a, b) => (b.rmsError / (b.rms || 1) > a.rmsError / (a.rms || 1) ? b : a));
    summary[type] = { agreement: same / total, same, total, ...(quantization ? { losslessBlocks: blocks[0], blocks: blocks[1] } : {}), mismatchLogitGaps: gaps, medianTop2Gap: medianTopGap, fileBytes: exported.fileSize, worstRelativeRmsError: worst.rmsError / worst.rms, worstTensor: worst.name };
    console.log(`${type}: ${same}/${total} greedy tokens agree (${((100 * same) / total).toFixed(1)}%), file ${(exported.fileSize / 1e6).toFixed(1)} MB, worst tensor relative RMS error ${(worst.rmsError / worst.rms).toExponential(2)} (${worst.name}); where they differ, Kiln's logit margin ${gaps.map((g) => g.toFixed(3)).join(', ') || '-'} (median top-2 gap over all positions ${medianTopGap.toFixed(3)})${quantization ? `; ${blocks[0]}/${blocks[1]} blocks kept exactly` : ''}`);
  }
  console.log(JSON.stringify({ model: modelDir, importDtype: dtype ?? 'default', quantization: quantization ?? 'none', llamaFlashAttention: flashAttention === undefined ? 'auto' : flashAttention ? 'on' : 'off', maxTokens, prompts: PROMPTS.length, summary }));
} finally {
  await fs.rm(work, { recursive: true, force: true });
}
