#!/usr/bin/env node
// llama.cpp against itself (issue 13's agreement target in context): greedy tokens of a GGUF file with one
// attention path (flash attention off), then the other path's (on) greedy choice at each of those
// positions, teacher-forced as tools/bench/gguf-agreement.mjs does for Kiln. Both runs are node-llama-cpp's
// prebuilt CPU binary on the same weights; only the order of float operations differs.
//
// Usage: node tools/bench/llama-cpp-self-agreement.mjs <file.gguf> [--prompts 16] [--tokens 24]
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const child = path.join(here, '..', '..', 'packages/cli/test/llama-cpp-greedy.mjs');
const PROMPTS = [
  'And the LORD said unto Moses,', 'In the beginning God', 'And it came to pass, when', 'Blessed are they that',
  'Now the serpent was more subtil', 'The LORD is my shepherd;', 'And God said, Let there be', 'Hear, O Israel:',
  'For God so loved the world,', 'And Jesus answered and said', 'Vanity of vanities, saith', 'Then came the word of the LORD',
  'And the earth was without form,', 'Thus saith the Lord GOD;', 'And Moses went up unto God,', 'O give thanks unto the LORD;',
];
const argv = process.argv.slice(2);
const gguf = argv[0];
let prompts = 16;
let maxTokens = 24;
for (let i = 1; i < argv.length; i++) {
  if (argv[i] === '--prompts') prompts = Number(argv[++i]);
  else if (argv[i] === '--tokens') maxTokens = Number(argv[++i]);
}
function llamaCpp(request) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [child, gguf, JSON.stringify(request)]);
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('close', (code) => (code === 0 ? resolve(JSON.parse(stdout)) : reject(new Error(`node-llama-cpp exited ${code}: ${stderr}`))));
  });
}
const texts = PROMPTS.slice(0, prompts);
// llama.cpp's own tokenization, with BOS first when the file asks for it.
const { tokenized } = await llamaCpp({ prompts: [], maxTokens: 0, texts });
const promptIds = tokenized.map((ids) => (ids.length ? ids : [0]));
const { generated } = await llamaCpp({ prompts: promptIds, maxTokens, flashAttention: false });
const { predicted } = await llamaCpp({ prompts: promptIds, maxTokens, forced: generated, flashAttention: true });
let same = 0;
generated.forEach((tokens, i) => tokens.forEach((t, j) => (same += predicted[i][j] === t ? 1 : 0)));
const total = generated.length * maxTokens;
console.log(`${path.basename(gguf)}: llama.cpp flash attention on agrees with off on ${same}/${total} greedy tokens (${((100 * same) / total).toFixed(1)}%)`);
