#!/usr/bin/env node
// Issue 10's measurement ("GPU speed"), in one run on the GPU machine: a TinyLlama-1.1B-shaped LLaMA with
// random bfloat16 weights (22 layers, hidden 2048, MLP 5632, 32 heads, 4 KV heads, vocab 32000;
// make-random-llama.mjs), converted once and built for cuda per engine variant (gpu/config.mjs: bfloat16
// now; the quantized modes join that list), then:
//   1. batch 1, 128-token prompt, 256 new tokens, greedy: Kiln in this process (as shipped; the reference
//      variant also without CUDA graphs, without the GEMV, its per-op profile and step timing);
//   2. `kiln bench --engine E --num-requests 512 --input-len 128 --output-len 128 --concurrency 64 --json`
//      and at --concurrency 1 (16 requests), E built with maxBatchSize 64, maxNumTokens 4096;
//   3. the same workload at concurrency 64 over HTTP: `kiln serve --engine E` on 127.0.0.1, `kiln bench --url`;
//   4. TTFT of a 512-token prompt at concurrency 1 (`kiln bench --input-len 512 --output-len 1`, median),
//      and for the reference variant again with KILN_CUDA_PREFILL_ATTENTION=wmma (the older kernel);
//   5. transformers on the same weights (gpu_transformers.py): eager and static cache + torch.compile, at
//      batch 1 and batch 64, and the device copy bandwidth, which gives the HBM bound;
// and writes bench-gpu.json and bench-gpu.md (every figure with its target of the issue, met or not) to
// $KILN_RESULTS_DIR (or tools/bench/.out). Progress lines with timings go to stdout, the per-op profile to
// stderr. Run by `bash tools/gpu/run.sh --bench` on the GPU machine; `KILN_BENCH_TARGET=cpu node
// tools/bench/gpu-baseline.mjs` is a dry run of the whole flow on cpu engines of a tiny model (gpu/config.mjs).
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { makeRandomLlama } from './make-random-llama.mjs';
import { benchConfig, TARGETS } from './gpu/config.mjs';
import { DIAGNOSTIC_MODES, LONG_CONTEXT_MODES, measureDecode, profileDecode, stepTiming } from './gpu/kiln-decode.mjs';
import { kilnBench, withServer } from './gpu/kiln-cli.mjs';
import { buildReport } from './gpu/report.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.join(here, '..', '..');
const requireFromRoot = createRequire(path.join(root, 'package.json'));
const { convertCheckpoint } = requireFromRoot('@kiln/convert');
const { buildEngine } = requireFromRoot('@kiln/builder');

const START = process.hrtime.bigint();
const elapsed = () => Number(process.hrtime.bigint() - START) / 1e9;
const log = (message) => console.log(`[bench ${elapsed().toFixed(1).padStart(6)} s] ${message}`);

/** Every step's duration, for the report. */
const stepSeconds = [];

/** Runs fn, logging its duration; on failure logs the error and returns { error } so that the run goes on. */
async function step(label, fn) {
  const t0 = elapsed();
  log(`${label} ...`);
  try {
    const value = await fn();
    log(`${label}: done in ${(elapsed() - t0).toFixed(1)} s`);
    return value;
  } catch (error) {
    console.error(error);
    log(`${label}: FAILED after ${(elapsed() - t0).toFixed(1)} s: ${error.message.split('\n')[0]}`);
    return { error: error.message };
  } finally {
    stepSeconds.push({ step: label, seconds: Number((elapsed() - t0).toFixed(2)) });
  }
}

/** Deterministic prompt ids, away from the special ids; `row` gives each prompt of a batch its own. */
function promptIds(length, vocab, row = 0) {
  return Array.from({ length }, (_, i) => 100 + ((i * 7919 + row * 104729) % (vocab - 200)));
}

/**
 * gpu_transformers.py, stopped after cfg.peer.timeoutS (a compile that runs away must not eat the device
 * command's 10 minutes): then the phases it finished, from its --partial file, with an error.
 */
function runPeer(cfg, modelDir, workDir) {
  const promptFile = path.join(workDir, 'prompt.json');
  const batchFile = path.join(workDir, 'batch-prompts.json');
  const partialFile = path.join(workDir, 'transformers-partial.json');
  fs.rmSync(partialFile, { force: true });
  fs.writeFileSync(promptFile, JSON.stringify(promptIds(cfg.batch1.promptTokens, cfg.shape.vocab)));
  fs.writeFileSync(batchFile, JSON.stringify(Array.from({ length: cfg.peer.batch }, (_, row) => promptIds(cfg.batch1.promptTokens, cfg.shape.vocab, row))));
  const args = [path.join(here, 'gpu_transformers.py'), modelDir, promptFile, String(cfg.batch1.newTokens), '--batch-prompts', batchFile, '--partial', partialFile];
  if (cfg.skip.has('compile')) args.push('--no-compile');
  return new Promise((resolve, reject) => {
    const child = execFile(cfg.python, args, { encoding: 'utf8', maxBuffer: 1 << 26, timeout: cfg.peer.timeoutS * 1000, killSignal: 'SIGKILL' }, (error, stdout) => {
      if (!error) {
        try {
          return resolve(JSON.parse(stdout.trim().split('\n').pop()));
        } catch {
          return reject(new Error(`gpu_transformers.py printed no JSON object: ${stdout.slice(-2000)}`));
        }
      }
      const why = error.killed ? `stopped after ${cfg.peer.timeoutS} s (KILN_BENCH_PEER_TIMEOUT_S)` : `failed: ${error.message.split('\n')[0]}`;
      let partial;
      try {
        partial = JSON.parse(fs.readFileSync(partialFile, 'utf8'));
      } catch {
        return reject(new Error(`${cfg.python} gpu_transformers.py ${why}`));
      }
      // The phases that finished stand; the one that was running is reported as the error.
      resolve({ ...partial, incomplete: `gpu_transformers.py ${why}; the phases it had not finished are missing` });
    });
    child.stderr.pipe(process.stderr);
  });
}

/** Whether `python -c "import torch, transformers"` works, and torch sees a GPU; else why not. */
function peerUnavailable(cfg) {
  return new Promise((resolve) => {
    execFile(cfg.python, ['-c', 'import torch, transformers; assert torch.cuda.is_available(), "torch sees no CUDA device"'], { encoding: 'utf8' }, (error, _stdout, stderr) => {
      resolve(error ? `${cfg.python} cannot run the transformers peer: ${(stderr || error.message).trim().split('\n').pop()}` : undefined);
    });
  });
}

/** The checkout's commit, when git and the repository are there (the GPU machine may have neither). */
function commit() {
  try {
    const head = execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return dirty ? `${head} (with local changes)` : head;
  } catch {
    return undefined;
  }
}

async function main() {
  const cfg = benchConfig();
  cfg.commit = commit();
  cfg.command = [...Object.entries(process.env).filter(([k]) => k.startsWith('KILN_BENCH_')).map(([k, v]) => `${k}=${v}`), 'node tools/bench/gpu-baseline.mjs'].join(' ');
  const workDir = path.join(process.env.KILN_BENCH_DIR ?? path.join(here, '.out'), `gpu-bench-${cfg.shapeName}`);
  const resultsDir = process.env.KILN_RESULTS_DIR ?? path.join(here, '.out');
  fs.mkdirSync(workDir, { recursive: true });
  fs.mkdirSync(resultsDir, { recursive: true });
  log(`target ${cfg.target}, shape ${cfg.shapeName} ${JSON.stringify(cfg.shape)}; variants ${cfg.variants.map((v) => v.name).join(', ')}` + (cfg.skip.size ? `; skipping ${[...cfg.skip].join(', ')}` : ''));

  const model = await step('random model', () => makeRandomLlama(path.join(workDir, 'hf'), cfg.shape));
  if (model.error) throw new Error(model.error);
  log(`random model: ${model.parameters} parameters, ${(model.weightBytes / 1e9).toFixed(2)} GB bf16${model.reused ? ' (reused)' : ''}`);
  const checkpointDir = path.join(workDir, 'checkpoint');
  await step('convert', () => convertCheckpoint({ modelDir: model.dir, outputDir: checkpointDir }));

  const prompt = promptIds(cfg.batch1.promptTokens, cfg.shape.vocab);
  const variants = [];
  let peer = { unavailable: 'not run yet' };
  // The report is written again after every phase: if the device command is stopped, what was measured comes back.
  const save = () => {
    const report = buildReport({ cfg, model, variants, peer, totalSeconds: elapsed(), stepSeconds });
    fs.writeFileSync(path.join(resultsDir, 'bench-gpu.json'), `${JSON.stringify(report.json, null, 2)}\n`);
    fs.writeFileSync(path.join(resultsDir, 'bench-gpu.md'), `${report.md}\n`);
    return report;
  };
  for (const variant of cfg.variants) {
    const slug = variant.name.replace(/[^a-z0-9]+/gi, '-').toLowerCase();
    const engines = { batch1: path.join(workDir, `engine-${slug}-b1`), serving: path.join(workDir, `engine-${slug}-b${cfg.serving.engine.maxBatchSize}`) };
    const out = { name: variant.name, reference: !!variant.reference, targets: variant.targets ?? {}, engines: {} };
    variants.push(out);
    // The serving engine only for the phases that use it.
    const servingPhases = ['serving', 'http', 'ttft'].some((phase) => !cfg.skip.has(phase));
    for (const [kind, dir] of Object.entries(engines)) {
      if (kind === 'serving' && !servingPhases) continue;
      const config = { target: cfg.target, ...variant.build, ...(kind === 'batch1' ? cfg.batch1.engine : cfg.serving.engine) };
      out.engines[kind] = { config };
      const built = await step(`${variant.name}: build the ${kind} engine ${JSON.stringify(config)}`, () => buildEngine({ checkpointDir, outputDir: dir, config }));
      if (built?.error) out.engines[kind].error = built.error;
    }

    // 1. Batch-1 decode in this process.
    const modes = [{ name: 'as shipped', env: {} }, ...(variant.reference && !cfg.skip.has('diagnostics') && cfg.target === 'cuda' ? DIAGNOSTIC_MODES : [])];
    out.batch1 = [];
    for (const mode of modes) {
      const r = await step(`${variant.name}: batch 1, ${mode.name}`, () =>
        measureDecode(engines.batch1, prompt, cfg.batch1.newTokens, mode.env, (m) => log(`${variant.name}, ${mode.name}: ${m}`)),
      );
      if (!r.error) log(`${variant.name}, ${mode.name}: first token ${r.firstTokenMs.toFixed(2)} ms, decode ${r.msPerToken.toFixed(3)} ms/token (runs ${r.allRunsMsPerToken.map((x) => x.toFixed(3)).join(', ')})`);
      out.batch1.push({ mode: mode.name, env: mode.env, ...r });
      save();
    }
    if (variant.reference && !cfg.skip.has('diagnostics') && cfg.target === 'cuda') {
      await step('per-op profile (KILN_CUDA_PROFILE=1, graphs off; table on stderr)', () => profileDecode(engines.batch1, prompt));
      const timing = await step('step timing (KILN_CUDA_STEP_TIMING=1)', () => stepTiming(engines.batch1, prompt, cfg.batch1.newTokens));
      if (!timing.error) log(`step timing: wall ${timing.wallMsPerToken.toFixed(3)} ms/token, executor iteration ${timing.iterationMs.toFixed(3)} ms (${timing.decodeIterations} decode iterations)`);
      out.stepTiming = timing;
      save();
    }

    // 2. kiln bench through the executor, at high concurrency and at concurrency 1.
    const { numRequests, concurrency, c1Requests, inputLen, outputLen } = cfg.serving;
    const source = ['--engine', engines.serving];
    if (!cfg.skip.has('serving')) {
      out.highConcurrency = await step(`${variant.name}: kiln bench, ${numRequests} requests ${inputLen}/${outputLen}, concurrency ${concurrency}`, () =>
        kilnBench(source, { numRequests, inputLen, outputLen, concurrency }),
      );
      logBench(out.highConcurrency);
      save();
      out.concurrency1 = await step(`${variant.name}: kiln bench, ${c1Requests} requests ${inputLen}/${outputLen}, concurrency 1`, () =>
        kilnBench(source, { numRequests: c1Requests, inputLen, outputLen, concurrency: 1 }),
      );
      logBench(out.concurrency1);
      save();
    }
    // 3. The same at high concurrency over HTTP (reference variant).
    if (variant.reference && !cfg.skip.has('http')) {
      out.http = await step(`${variant.name}: kiln serve + kiln bench --url, concurrency ${concurrency}`, () =>
        withServer(engines.serving, path.join(resultsDir, 'serve.log'), (url) => {
          log(`kiln serve is ready at ${url}`);
          return kilnBench(['--url', url], { numRequests, inputLen, outputLen, concurrency });
        }),
      );
      logBench(out.http);
      save();
    }
    // 4. TTFT of a long prompt at concurrency 1 (kiln bench warms up with one request of the same length first).
    if (!cfg.skip.has('ttft')) {
      out.ttft = await step(`${variant.name}: TTFT, ${cfg.ttft.numRequests} requests of ${cfg.ttft.promptTokens} tokens, concurrency 1`, () =>
        kilnBench(source, { numRequests: cfg.ttft.numRequests, inputLen: cfg.ttft.promptTokens, outputLen: 1, concurrency: 1 }),
      );
      if (!out.ttft.error) log(`TTFT ${cfg.ttft.promptTokens} tokens: median ${out.ttft.median_ttft_ms.toFixed(2)} ms, p90 ${out.ttft.p90_ttft_ms.toFixed(2)} ms`);
      save();
    }
    // 4b. The same with the WMMA prefill attention that the mma.sync kernel replaced (reference variant).
    if (variant.reference && !cfg.skip.has('ttft') && !cfg.skip.has('ttft-wmma') && cfg.target === 'cuda') {
      const env = { KILN_CUDA_PREFILL_ATTENTION: 'wmma' };
      out.ttftWmma = await step(`${variant.name}: TTFT as in 4, KILN_CUDA_PREFILL_ATTENTION=wmma`, () =>
        kilnBench(source, { numRequests: cfg.ttft.numRequests, inputLen: cfg.ttft.promptTokens, outputLen: 1, concurrency: 1 }, env),
      );
      if (!out.ttftWmma.error) log(`TTFT ${cfg.ttft.promptTokens} tokens, wmma prefill attention: median ${out.ttftWmma.median_ttft_ms.toFixed(2)} ms, p90 ${out.ttftWmma.p90_ttft_ms.toFixed(2)} ms`);
      save();
    }
    // 4c. The high-concurrency and TTFT runs again with each GEMM's algorithm chosen by timing
    // (KILN_CUDA_GEMM_TUNE=1, decision 0021; off by default), for the side-by-side figures.
    if (!cfg.skip.has('tuned')) {
      const tunedEnv = { KILN_CUDA_GEMM_TUNE: '1' };
      const label = 'KILN_CUDA_GEMM_TUNE=1';
      out.tuned = { env: tunedEnv };
      if (!cfg.skip.has('serving')) {
        out.tuned.highConcurrency = await step(`${variant.name}, ${label}: kiln bench, ${numRequests} requests ${inputLen}/${outputLen}, concurrency ${concurrency}`, () =>
          kilnBench(source, { numRequests, inputLen, outputLen, concurrency }, tunedEnv),
        );
        logBench(out.tuned.highConcurrency);
      }
      if (!cfg.skip.has('ttft')) {
        out.tuned.ttft = await step(`${variant.name}, ${label}: TTFT, ${cfg.ttft.numRequests} requests of ${cfg.ttft.promptTokens} tokens, concurrency 1`, () =>
          kilnBench(source, { numRequests: cfg.ttft.numRequests, inputLen: cfg.ttft.promptTokens, outputLen: 1, concurrency: 1 }, tunedEnv),
        );
        if (!out.tuned.ttft.error) log(`${label}: TTFT ${cfg.ttft.promptTokens} tokens: median ${out.tuned.ttft.median_ttft_ms.toFixed(2)} ms, p90 ${out.tuned.ttft.p90_ttft_ms.toFixed(2)} ms`);
      }
      save();
    }
    // 5. Batch-1 decode at a long context: split-K decode attention as shipped, with smaller splits, off.
    if (variant.reference && !cfg.skip.has('longctx')) {
      const lc = cfg.longContext;
      const dir = path.join(workDir, `engine-${slug}-b1-long`);
      const config = { target: cfg.target, ...variant.build, ...lc.engine };
      const built = await step(`${variant.name}: build the long-context engine ${JSON.stringify(config)}`, () => buildEngine({ checkpointDir, outputDir: dir, config }));
      out.longContext = [];
      if (built?.error) out.longContext.push({ mode: 'build', error: built.error });
      else {
        const longPrompt = promptIds(lc.promptTokens, cfg.shape.vocab);
        for (const mode of LONG_CONTEXT_MODES) {
          const r = await step(`${variant.name}: batch 1 at a ${lc.promptTokens}-token context, ${mode.name}`, () =>
            measureDecode(dir, longPrompt, lc.newTokens, mode.env, (m) => log(`${variant.name}, long context, ${mode.name}: ${m}`)),
          );
          if (!r.error) log(`${variant.name}, long context, ${mode.name}: decode ${r.msPerToken.toFixed(3)} ms/token (runs ${r.allRunsMsPerToken.map((x) => x.toFixed(3)).join(', ')})`);
          out.longContext.push({ mode: mode.name, env: mode.env, ...r });
          save();
        }
      }
    }
  }

  // 6. transformers on the same weights, and the copy bandwidth.
  if (cfg.skip.has('peer')) peer = { unavailable: 'skipped (KILN_BENCH_SKIP=peer)' };
  else {
    const why = await peerUnavailable(cfg);
    if (why) {
      log(`transformers peer: unavailable: ${why}`);
      peer = { unavailable: why };
    } else peer = await step('transformers (gpu_transformers.py)', () => runPeer(cfg, model.dir, workDir));
  }

  const { json, md } = save();
  console.log(md);
  log(`wrote ${path.join(resultsDir, 'bench-gpu.json')} and bench-gpu.md; total ${elapsed().toFixed(1)} s`);
  // A phase that failed fails the run (its error is in the report), after the report is written.
  if (json.errors.length > 0) process.exitCode = 1;
}

function logBench(m) {
  if (!m || m.error) return;
  const memory = m.kv_blocks_total === undefined ? '' : `; KV blocks in use: peak ${m.peak_kv_blocks_used ?? 'n/a'} of ${m.kv_blocks_total}`;
  log(`  ${m.output_throughput.toFixed(0)} output tok/s, ${m.completed} requests in ${m.duration_s.toFixed(2)} s, median TTFT ${m.median_ttft_ms.toFixed(2)} ms, median TPOT ${m.median_tpot_ms.toFixed(2)} ms${memory}`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
