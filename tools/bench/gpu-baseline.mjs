#!/usr/bin/env node
// Batch-1 decode on the GPU: a TinyLlama-1.1B-shaped LLaMA with random bfloat16 weights (22 layers,
// hidden 2048, MLP 5632, 32 heads, 4 KV heads, vocab 32000; make-random-llama.mjs) built for cuda, with
// transformers' eager decode of the same weights and the device copy bandwidth from the same run
// (gpu_transformers.py). Prompt 128 tokens, 256 new tokens, greedy. Decode ms/token is
// (time for 256 tokens - time for 1 token) / 255, after a warm-up. Writes bench-gpu.{json,md} to
// $KILN_RESULTS_DIR (or tools/bench/.out). Run by `bash tools/gpu/run.sh --bench` on the GPU machine.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { makeRandomLlama } from './make-random-llama.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.join(here, '..', '..');
const requireFromRoot = createRequire(path.join(root, 'package.json'));
const { convertCheckpoint } = requireFromRoot('@kiln/convert');
const { buildEngine } = requireFromRoot('@kiln/builder');
const { Engine } = requireFromRoot('@kiln/runtime');

const SHAPE = { layers: 22, hidden: 2048, intermediate: 5632, heads: 32, kvHeads: 4, vocab: 32000, maxPositions: 2048 };
const PROMPT_TOKENS = 128;
const NEW_TOKENS = 256;
const workDir = path.join(process.env.KILN_BENCH_DIR ?? path.join(here, '.out'), 'tinyllama-bf16');
const resultsDir = process.env.KILN_RESULTS_DIR ?? path.join(here, '.out');

const seconds = (t0) => Number(process.hrtime.bigint() - t0) / 1e9;

async function main() {
  fs.mkdirSync(resultsDir, { recursive: true });
  let t0 = process.hrtime.bigint();
  const model = makeRandomLlama(path.join(workDir, 'hf'), SHAPE);
  console.log(`random model: ${model.parameters} parameters, ${(model.weightBytes / 1e9).toFixed(2)} GB bf16 (${seconds(t0).toFixed(1)} s)`);
  const checkpointDir = path.join(workDir, 'checkpoint');
  const engineDir = path.join(workDir, 'engine');
  t0 = process.hrtime.bigint();
  await convertCheckpoint({ modelDir: model.dir, outputDir: checkpointDir });
  await buildEngine({
    checkpointDir,
    outputDir: engineDir,
    config: { target: 'cuda', dtype: 'bfloat16', maxBatchSize: 1, maxSeqLen: 512, maxNumTokens: 512 },
  });
  console.log(`convert + build: ${seconds(t0).toFixed(1)} s`);

  // Deterministic prompt ids, away from the special ids.
  const prompt = Array.from({ length: PROMPT_TOKENS }, (_, i) => 100 + ((i * 7919) % (SHAPE.vocab - 200)));
  const promptFile = path.join(workDir, 'prompt.json');
  fs.writeFileSync(promptFile, JSON.stringify(prompt));

  // Kiln as shipped, then with its decode features turned off one by one (environment switches read
  // when an engine loads): CUDA graphs (KILN_CUDA_GRAPHS=0), then also the GEMV (KILN_CUDA_GEMV=0).
  const modes = [
    { name: 'Kiln, cuda bfloat16 engine', env: {} },
    { name: 'Kiln, without CUDA graphs', env: { KILN_CUDA_GRAPHS: '0' } },
    { name: 'Kiln, without graphs or GEMV (cuBLASLt only)', env: { KILN_CUDA_GRAPHS: '0', KILN_CUDA_GEMV: '0' } },
  ];
  const kilnRuns = [];
  for (const mode of modes) {
    delete process.env.KILN_CUDA_GRAPHS;
    delete process.env.KILN_CUDA_GEMV;
    Object.assign(process.env, mode.env);
    t0 = process.hrtime.bigint();
    const engine = await Engine.load(engineDir);
    console.log(`${mode.name}: load ${seconds(t0).toFixed(1)} s; ${engine.info.device}; weights ${(engine.info.weightBytes / 2 ** 20).toFixed(0)} MiB, KV ${(engine.info.kvCacheBytes / 2 ** 20).toFixed(0)} MiB`);
    const generate = async (maxTokens) => {
      const start = process.hrtime.bigint();
      const result = await engine.generate(prompt, { maxTokens, ignoreEos: true });
      return { seconds: seconds(start), ids: result.outputIds };
    };
    await generate(8); // warm-up: plans, allocations, graph capture
    const runs = [];
    for (let r = 0; r < 3; r++) {
      const one = await generate(1);
      const full = await generate(NEW_TOKENS);
      if (full.ids.length !== NEW_TOKENS) throw new Error(`kiln generated ${full.ids.length} tokens, not ${NEW_TOKENS}`);
      runs.push({ firstTokenMs: one.seconds * 1e3, msPerToken: ((full.seconds - one.seconds) * 1e3) / (NEW_TOKENS - 1), ids: full.ids });
    }
    await engine.dispose();
    runs.sort((a, b) => a.msPerToken - b.msPerToken);
    kilnRuns.push({ ...mode, ...runs[1], allRunsMsPerToken: runs.map((r) => r.msPerToken) }); // median of 3
  }
  delete process.env.KILN_CUDA_GRAPHS;
  delete process.env.KILN_CUDA_GEMV;
  // Where a decode step's time goes: every op timed with CUDA events (printed to stderr on dispose).
  process.env.KILN_CUDA_PROFILE = '1';
  const profiled = await Engine.load(engineDir);
  await profiled.generate(prompt, { maxTokens: 64, ignoreEos: true });
  await profiled.dispose();
  delete process.env.KILN_CUDA_PROFILE;
  // Where a shipped decode step's wall time goes: the executor's iteration (host scheduling, the step,
  // sampling), the step's host time in runStep and its device time (events around it, graphs on).
  process.env.KILN_CUDA_STEP_TIMING = '1';
  const timed = await Engine.load(engineDir);
  const timedStart = process.hrtime.bigint();
  await timed.generate(prompt, { maxTokens: NEW_TOKENS, ignoreEos: true });
  const timedWallMs = Number(process.hrtime.bigint() - timedStart) / 1e6 / NEW_TOKENS;
  const iterations = timed.executor.stats().recentIterations.filter((it) => it.numContextTokens === 0 && it.numGenerationTokens === 1);
  const iterationMs = iterations.reduce((sum, it) => sum + it.iterationMs, 0) / Math.max(1, iterations.length);
  console.log(`step timing: wall ${timedWallMs.toFixed(3)} ms/token, executor iteration ${iterationMs.toFixed(3)} ms (${iterations.length} decode iterations)`);
  await timed.dispose();
  delete process.env.KILN_CUDA_STEP_TIMING;
  const kiln = kilnRuns[0];
  // The modes compute the same tokens (the GEMV and cuBLASLt sum in different orders: near ties may differ).
  const sameAsShipped = kilnRuns.map((r) => {
    let n = 0;
    while (n < NEW_TOKENS && r.ids[n] === kiln.ids[n]) n++;
    return n;
  });

  const peer = JSON.parse(
    execFileSync('python3', [path.join(here, 'gpu_transformers.py'), model.dir, promptFile, String(NEW_TOKENS)], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
      maxBuffer: 1 << 26,
    })
      .trim()
      .split('\n')
      .pop(),
  );
  // Bytes read per decoded token: every matrix once; of the embedding table only one row.
  const bytesPerToken = model.weightBytes - SHAPE.vocab * SHAPE.hidden * 2;
  const boundMs = (bytesPerToken / peer.copyBandwidthBytesPerSecond) * 1e3;
  let agree = 0;
  while (agree < NEW_TOKENS && kiln.ids[agree] === peer.eagerOutputIds[agree]) agree++;
  const result = {
    date: new Date().toISOString().slice(0, 10),
    device: peer.device,
    model: { ...SHAPE, dtype: 'bfloat16', parameters: model.parameters, weightBytes: model.weightBytes },
    promptTokens: PROMPT_TOKENS,
    newTokens: NEW_TOKENS,
    kiln: kilnRuns.map((r, i) => ({ mode: r.name, env: r.env, firstTokenMs: r.firstTokenMs, msPerToken: r.msPerToken, allRunsMsPerToken: r.allRunsMsPerToken, tokensEqualToShipped: sameAsShipped[i] })),
    transformersEager: { version: peer.transformers, torch: peer.torch, firstTokenMs: peer.eagerFirstTokenMs, msPerToken: peer.eagerMsPerToken },
    copyBandwidthGBs: peer.copyBandwidthBytesPerSecond / 1e9,
    hbmBoundMsPerToken: boundMs,
    greedyTokensEqualToTransformersPrefix: agree,
  };
  const md = [
    `| run (${peer.device}, batch 1, ${PROMPT_TOKENS}-token prompt, ${NEW_TOKENS} new tokens) | first token ms | decode ms/token | tokens/s | of the HBM bound |`,
    '| --- | --- | --- | --- | --- |',
    ...kilnRuns.map((r) => `| ${r.name} | ${r.firstTokenMs.toFixed(2)} | ${r.msPerToken.toFixed(3)} | ${(1e3 / r.msPerToken).toFixed(0)} | ${((boundMs / r.msPerToken) * 100).toFixed(0)}% |`),
    `| transformers ${peer.transformers} eager (torch ${peer.torch}) | ${peer.eagerFirstTokenMs.toFixed(2)} | ${peer.eagerMsPerToken.toFixed(3)} | ${(1e3 / peer.eagerMsPerToken).toFixed(0)} | ${((boundMs / peer.eagerMsPerToken) * 100).toFixed(0)}% |`,
    '',
    `HBM bound: ${(bytesPerToken / 1e9).toFixed(2)} GB of weights per token / ${result.copyBandwidthGBs.toFixed(0)} GB/s device copy = ${boundMs.toFixed(3)} ms/token. ` +
      `Kiln / transformers eager: ${(peer.eagerMsPerToken / kiln.msPerToken).toFixed(2)}x. Greedy tokens equal for the first ${agree} of ${NEW_TOKENS} (random weights: near ties).`,
  ].join('\n');
  fs.writeFileSync(path.join(resultsDir, 'bench-gpu.json'), `${JSON.stringify(result, null, 2)}\n`);
  fs.writeFileSync(path.join(resultsDir, 'bench-gpu.md'), `${md}\n`);
  console.log(md);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
