#!/usr/bin/env node
// Issue 11's GPU measurement: a Llama-3.1-8B-shaped LLaMA with random bfloat16 weights (32 layers, hidden
// 4096, MLP 14336, 32 heads, 8 KV heads, vocab 128256; make-random-llama.mjs) built for cuda at tp 1 and
// at tp 2 (`kiln convert --tp-size 2`: one engine per rank, NCCL between the two GPUs), then for each:
//   - batch-1 decode: `kiln bench --num-requests 3 --input-len 128 --output-len 256 --concurrency 1`,
//     median TPOT (target: tp 2 <= 0.6 x tp 1);
//   - concurrency 64: `kiln bench --num-requests 512 --input-len 128 --output-len 128 --concurrency 64`,
//     output tokens/s;
// tp 2 runs under `mpirun -n 2` (rank 0 prints; rank 1 follows). The HBM bound of a decode step is the
// weight bytes one GPU reads per token / the device copy bandwidth (4.27 TB/s on the H200, docs/gpu-machine).
// Writes bench-parallel.json and bench-parallel.md to $KILN_RESULTS_DIR (or tools/bench/.out).
//   node tools/bench/gpu-parallel.mjs [--prepare-only]
// KILN_PAR_LAYERS=N builds a shallower model (a quick check of the flow); KILN_BENCH_DIR the work folder.
// Disk: the intermediate folders are removed as soon as the engines are built (peak ~64 GB).
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeRandomLlama } from './make-random-llama.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.join(here, '..', '..');
const requireFromRoot = createRequire(path.join(root, 'package.json'));
const { convertCheckpoint } = requireFromRoot('@kiln/convert');
const { buildEngine } = requireFromRoot('@kiln/builder');
const kilnBin = path.join(root, 'packages', 'cli', 'dist', 'bin', 'kiln.js');

const START = Date.now();
const log = (m) => console.log(`[parallel ${((Date.now() - START) / 1000).toFixed(1).padStart(6)} s] ${m}`);
const COPY_BANDWIDTH_GBS = Number(process.env.KILN_BENCH_COPY_GBS || 4269);  // issue 10's measured copy bandwidth

const SHAPE = {
  layers: Number(process.env.KILN_PAR_LAYERS || 32),
  hidden: 4096,
  intermediate: 14336,
  heads: 32,
  kvHeads: 8,
  vocab: 128256,
  maxPositions: 2048,
  seed: 8031,
};
const ENGINE = { target: 'cuda', dtype: 'bfloat16', maxBatchSize: 64, maxSeqLen: 512, maxNumTokens: 4096 };
const MPI_ENV = {
  OMPI_ALLOW_RUN_AS_ROOT: '1',
  OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1',
  OMPI_MCA_btl: 'self,vader',
  NCCL_NVLS_ENABLE: '0',  // NVLink multicast stays off on the shared machines
};

function run(command, args, env = {}, timeoutMs = 600_000) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
    let stdout = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (t) => (stdout += t));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(stdout);
      else reject(new Error(`${command} ${args.join(' ')} exited ${code ?? signal}: ${stdout.slice(-2000)}`));
    });
  });
}

async function bench(engineDir, ranks, workload, env = {}) {
  const args = ['bench', '--engine', engineDir, '--num-requests', String(workload.numRequests), '--input-len', String(workload.inputLen)];
  args.push('--output-len', String(workload.outputLen), '--concurrency', String(workload.concurrency), '--json');
  if (workload.warmup) args.push('--warmup', String(workload.warmup));
  const prefix = Object.entries(env).map(([k, v]) => `${k}=${v} `).join('');
  const command = ranks === 1 ? `${prefix}kiln ${args.join(' ')}` : `${prefix}mpirun -n ${ranks} kiln ${args.join(' ')}`;
  const stdout =
    ranks === 1
      ? await run(process.execPath, [kilnBin, ...args], env)
      : await run('mpirun', ['-n', String(ranks), '--bind-to', 'none', '-x', 'NCCL_NVLS_ENABLE', process.execPath, kilnBin, ...args], { ...MPI_ENV, ...env });
  const line = stdout.trim().split('\n').pop();
  return { command, ...JSON.parse(line) };
}

async function prepare(workDir) {
  const engines = { 1: path.join(workDir, 'engine-tp1'), 2: path.join(workDir, 'engine-tp2') };
  const ready = (dir) => fs.existsSync(path.join(dir, 'config.json'));
  if (ready(engines[1]) && ready(engines[2])) {
    log('engines exist: reused');
    return engines;
  }
  const hf = path.join(workDir, 'hf');
  let t = Date.now();
  const model = makeRandomLlama(hf, SHAPE);
  log(`random model: ${model.parameters} parameters, ${(model.weightBytes / 1e9).toFixed(2)} GB in ${((Date.now() - t) / 1000).toFixed(1)} s`);
  for (const tp of [1, 2]) {
    if (ready(engines[tp])) continue;
    const checkpointDir = path.join(workDir, `checkpoint-tp${tp}`);
    t = Date.now();
    await convertCheckpoint({ modelDir: hf, outputDir: checkpointDir, ...(tp > 1 ? { tpSize: tp } : {}) });
    log(`convert tp ${tp}: ${((Date.now() - t) / 1000).toFixed(1)} s`);
    t = Date.now();
    await buildEngine({ checkpointDir, outputDir: engines[tp], config: ENGINE });
    log(`build tp ${tp}: ${((Date.now() - t) / 1000).toFixed(1)} s`);
    fs.rmSync(checkpointDir, { recursive: true, force: true });
  }
  fs.rmSync(hf, { recursive: true, force: true });
  return engines;
}

async function main() {
  const workDir = path.join(process.env.KILN_BENCH_DIR ?? path.join(here, '.out'), `parallel-8b-l${SHAPE.layers}`);
  const resultsDir = process.env.KILN_RESULTS_DIR ?? path.join(here, '.out');
  fs.mkdirSync(workDir, { recursive: true });
  fs.mkdirSync(resultsDir, { recursive: true });
  log(`shape ${JSON.stringify(SHAPE)}; engine ${JSON.stringify(ENGINE)}`);
  const engines = await prepare(workDir);
  if (process.argv.includes('--prepare-only')) return;

  const parameters =
    SHAPE.vocab * SHAPE.hidden * 2 +
    SHAPE.layers * (SHAPE.hidden * SHAPE.hidden * 2 + SHAPE.hidden * (SHAPE.hidden / SHAPE.heads) * SHAPE.kvHeads * 2 + 3 * SHAPE.hidden * SHAPE.intermediate);
  // Read per decode step, per GPU: every weight but the embedding table (one row of it).
  const bytesPerStep = (parameters - SHAPE.vocab * SHAPE.hidden) * 2;
  const results = { date: new Date().toISOString(), shape: SHAPE, engine: ENGINE, copyBandwidthGBs: COPY_BANDWIDTH_GBS, runs: [] };
  const save = () => {
    fs.writeFileSync(path.join(resultsDir, 'bench-parallel.json'), `${JSON.stringify(results, null, 2)}\n`);
    const rows = results.runs.flatMap((r) => {
      const boundMs = (bytesPerStep / r.tp / (COPY_BANDWIDTH_GBS * 1e9)) * 1e3;
      const row = (label, b1, c64) =>
        `| ${label} | ${b1?.median_tpot_ms?.toFixed(3) ?? b1?.error} | ${boundMs.toFixed(3)} | ${b1?.median_tpot_ms ? ((100 * boundMs) / b1.median_tpot_ms).toFixed(0) + '%' : ''} | ${c64?.output_throughput?.toFixed(0) ?? c64?.error} |`;
      return [row(`tp ${r.tp}`, r.batch1, r.c64), ...(r.batch1NcclOnly ? [row(`tp ${r.tp}, NCCL only (KILN_CUDA_PEER_ALLREDUCE=0)`, r.batch1NcclOnly, r.c64NcclOnly)] : [])];
    });
    const [one, two] = [results.runs.find((r) => r.tp === 1), results.runs.find((r) => r.tp === 2)];
    const ratio = one?.batch1?.median_tpot_ms && two?.batch1?.median_tpot_ms ? two.batch1.median_tpot_ms / one.batch1.median_tpot_ms : undefined;
    const md = [
      `# Llama-3.1-8B-shaped model (random bf16), tp 1 and tp 2 on H200s — ${results.date}`,
      '',
      `Shape ${JSON.stringify(SHAPE)}, ${(bytesPerStep / 1e9).toFixed(2)} GB read per decode step in all; engine ${JSON.stringify(ENGINE)}.`,
      '',
      '| mapping | batch-1 decode ms/token (median TPOT) | HBM bound per GPU, ms | of the bound | concurrency 64 output tok/s |',
      '| --- | --- | --- | --- | --- |',
      ...rows,
      '',
      ratio ? `tp 2 / tp 1 batch-1 decode: **${ratio.toFixed(3)}** (target <= 0.6: ${ratio <= 0.6 ? 'met' : 'not met'})` : '',
      '',
      'Commands:',
      ...results.runs.flatMap((r) => [r.batch1, r.c64, r.batch1NcclOnly, r.c64NcclOnly].map((x) => x?.command).filter(Boolean).map((c) => `- \`${c}\``)),
    ].join('\n');
    fs.writeFileSync(path.join(resultsDir, 'bench-parallel.md'), `${md}\n`);
    return md;
  };
  for (const tp of [1, 2]) {
    const entry = { tp };
    results.runs.push(entry);
    // c64 warms up with 128 requests first (kiln bench --warmup), so that each batch size's CUDA graph is
    // captured before the measured run, as a serving engine that has been up for a while has them. The
    // tp 2 batch-1 run is repeated with NCCL alone (no peer all-reduce).
    for (const [key, workload, env] of [
      ['batch1', { numRequests: 3, inputLen: 128, outputLen: 256, concurrency: 1 }, {}],
      ['c64', { numRequests: 512, inputLen: 128, outputLen: 128, concurrency: 64, warmup: 128 }, {}],
      ...(tp > 1 ? [['batch1NcclOnly', { numRequests: 3, inputLen: 128, outputLen: 256, concurrency: 1 }, { KILN_CUDA_PEER_ALLREDUCE: '0' }]] : []),
    ]) {
      const t = Date.now();
      try {
        entry[key] = await bench(engines[tp], tp, workload, env);
        log(`tp ${tp} ${key}: TPOT ${entry[key].median_tpot_ms.toFixed(3)} ms, ${entry[key].output_throughput.toFixed(0)} tok/s (${((Date.now() - t) / 1000).toFixed(1)} s)`);
      } catch (error) {
        entry[key] = { error: error.message.split('\n')[0] };
        log(`tp ${tp} ${key}: FAILED: ${error.message.slice(0, 500)}`);
      }
      save();
    }
  }
  console.log(save());
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
