import type { Command } from 'commander';
import type { BuildConfig } from '@kiln/builder';
import { Engine } from '@kiln/runtime';
import { drive, type DriveResult } from '../bench/driver';
import { computeMetrics, type BenchMetrics } from '../bench/metrics';
import { HttpTarget } from '../bench/http-target';
import { memoryJson, memoryRows, type BenchMemory } from '../bench/memory';
import { InProcessTarget, type BenchTarget } from '../bench/target';
import { makeWorkload } from '../bench/workload';
import {
  addKvCacheOptions,
  addTargetOptions,
  describeEngine,
  kvCacheOptionsFromFlags,
  modelTargetConfig,
  VERBOSE_OPTION_HELP,
  type KvCacheFlags,
  type TargetFlags,
} from '../engine-options';
import { CliError, reportCommandError } from '../errors';
import { engineForModel } from '../model-cache';
import { parsePositiveInteger } from './build';

/** maxBatchSize of the engines `kiln bench` builds for --model (or the default model): room for high concurrency. */
export const BENCH_MAX_BATCH_SIZE = 64;

interface BenchCommandOptions extends TargetFlags, KvCacheFlags {
  model?: string;
  engine?: string;
  url?: string;
  apiKey?: string;
  numRequests: string;
  warmup: string;
  inputLen: string;
  outputLen: string;
  concurrency?: string;
  requestRate?: string;
  seed: string;
  threads?: string;
  maxBatchSize?: string;
  json?: boolean;
  verbose?: boolean;
}

function parseRate(value: string): number {
  const rate = value.trim() === 'inf' ? Infinity : Number(value);
  if (!(rate > 0) || Number.isNaN(rate)) throw new CliError(`--request-rate: expected a positive number of requests per second or "inf", got ${JSON.stringify(value)}`);
  return rate;
}

async function engineDirFor(options: BenchCommandOptions, buildConfig: Partial<BuildConfig>): Promise<string> {
  if (options.engine !== undefined) return options.engine;
  return engineForModel(options.model, buildConfig);
}

const ROWS: [string, string][] = [
  ['Request throughput (req/s)', 'request_throughput'],
  ['Output token throughput (tok/s)', 'output_throughput'],
  ['Total token throughput (tok/s)', 'total_token_throughput'],
];

function table(header: Record<string, string | number>, m: BenchMetrics, memory: BenchMemory): string {
  const lines: string[] = [];
  const row = (label: string, value: string) => lines.push(`${label.padEnd(40)}${value}`);
  lines.push('============ Serving Benchmark Result ============');
  for (const [label, value] of Object.entries(header)) row(label, String(value));
  row('Successful requests', String(m.completed));
  row('Benchmark duration (s)', m.duration_s.toFixed(2));
  row('Total input tokens', String(m.total_input_tokens));
  row('Total generated tokens', String(m.total_output_tokens));
  for (const [label, key] of ROWS) row(label, m[key].toFixed(2));
  for (const [title, name] of [
    ['Time to First Token', 'ttft'],
    ['Time per Output Token (excl. 1st token)', 'tpot'],
    ['Inter-token Latency', 'itl'],
    ['End-to-end Latency', 'e2el'],
  ]) {
    lines.push(`${'-'.repeat(15)}${title}${'-'.repeat(Math.max(0, 35 - title.length))}`);
    for (const [label, stat] of [
      ['Mean', 'mean'],
      ['Median', 'median'],
      ['P90', 'p90'],
      ['P99', 'p99'],
    ]) {
      row(`${label} ${name.toUpperCase()} (ms)`, m[`${stat}_${name}_ms`].toFixed(2));
    }
  }
  const memoryTitle = memory.device === null ? 'Memory' : `Memory (${memory.device})`;
  lines.push(`${'-'.repeat(15)}${memoryTitle}${'-'.repeat(Math.max(0, 35 - memoryTitle.length))}`);
  for (const [label, value] of memoryRows(memory)) row(label, value);
  lines.push('='.repeat(50));
  return lines.join('\n');
}

async function bench(options: BenchCommandOptions): Promise<void> {
  if (options.model !== undefined && options.engine !== undefined) throw new CliError('give --model or --engine, not both');
  const numRequests = parsePositiveInteger('--num-requests', options.numRequests);
  const warmup = options.warmup === '0' ? 0 : parsePositiveInteger('--warmup', options.warmup);
  const inputLen = parsePositiveInteger('--input-len', options.inputLen);
  const outputLen = parsePositiveInteger('--output-len', options.outputLen);
  const requestRate = options.requestRate === undefined ? undefined : parseRate(options.requestRate);
  // Closed loop by default; with --request-rate alone, every arrived request is sent (vLLM's default).
  const concurrency =
    options.concurrency !== undefined ? parsePositiveInteger('--concurrency', options.concurrency) : requestRate !== undefined ? numRequests : 1;
  const seed = /^\d+$/.test(options.seed) ? Number(options.seed) : NaN;
  if (!Number.isSafeInteger(seed)) throw new CliError(`--seed: expected a non-negative integer, got ${JSON.stringify(options.seed)}`);
  const numThreads = options.threads === undefined ? undefined : parsePositiveInteger('--threads', options.threads);
  const maxBatchSize = options.maxBatchSize === undefined ? BENCH_MAX_BATCH_SIZE : parsePositiveInteger('--max-batch-size', options.maxBatchSize);
  const targetConfig = modelTargetConfig(options);
  const kvCache = kvCacheOptionsFromFlags(options);

  let target: BenchTarget;
  let batchSizeLimit: number | string;
  if (options.url !== undefined) {
    if (options.model !== undefined || options.engine !== undefined) throw new CliError('give --url, or --model / --engine, not both');
    const http = await HttpTarget.connect({ url: options.url, apiKey: options.apiKey ?? (process.env.KILN_API_KEY || undefined) });
    if (http.maxModelLen !== undefined && inputLen + outputLen > http.maxModelLen) {
      throw new CliError(`--input-len ${inputLen} + --output-len ${outputLen} exceed the served model's context length ${http.maxModelLen}`);
    }
    target = http;
    batchSizeLimit = 'server-side';
  } else {
    const engineDir = await engineDirFor(options, { ...targetConfig, maxBatchSize });
    const engine = await Engine.load(engineDir, { numThreads, ...kvCache });
    if (options.verbose) process.stderr.write(`${describeEngine(engine.info)}\n`);
    if (inputLen + outputLen > engine.maxSeqLen) {
      engine.dispose();
      throw new CliError(`--input-len ${inputLen} + --output-len ${outputLen} exceed the engine's maxSeqLen ${engine.maxSeqLen}`);
    }
    target = new InProcessTarget(engine);
    batchSizeLimit = engine.info.maxBatchSize;
  }
  try {
    const workload = makeWorkload({ numRequests, inputLen, outputLen, vocabSize: target.vocabSize, requestRate, seed });
    // One short request first, so that page faults of the first steps are not measured.
    await drive(target, makeWorkload({ numRequests: 1, inputLen, outputLen: 2, vocabSize: target.vocabSize, seed: seed + 1 }), 1);
    // --warmup: requests of the same shape at the same concurrency, not measured (as trtllm-bench's
    // --warmup): a GPU engine captures the CUDA graph of each batch size it meets in them.
    if (warmup > 0) await drive(target, makeWorkload({ numRequests: warmup, inputLen, outputLen, vocabSize: target.vocabSize, seed: seed + 2 }), concurrency);
    // The memory figures cover the measured run only (KV blocks in use: their peak during it).
    const stopWatching = target.watchMemory();
    let driven: DriveResult;
    try {
      driven = await drive(target, workload, concurrency);
    } catch (error) {
      await stopWatching();
      throw error;
    }
    const memory = await stopWatching();
    const metrics = computeMetrics(driven);
    const header = {
      Engine: target.description,
      'Number of requests': numRequests,
      'Input / output length': `${inputLen} / ${outputLen}`,
      'Max concurrency': concurrency,
      'Request rate (req/s)': requestRate === undefined ? 'inf' : String(requestRate),
      'Batch size limit': batchSizeLimit,
    };
    if (options.json) {
      process.stdout.write(
        `${JSON.stringify({
          engine: target.description,
          num_requests: numRequests,
          input_len: inputLen,
          output_len: outputLen,
          max_concurrency: concurrency,
          request_rate: requestRate === undefined || !Number.isFinite(requestRate) ? 'inf' : requestRate,
          seed,
          ...metrics,
          ...memoryJson(memory),
        })}\n`,
      );
    } else {
      process.stdout.write(`${table(header, metrics, memory)}\n`);
    }
  } finally {
    await target.close();
  }
}

export function registerBenchCommand(program: Command): void {
  const command = program
    .command('bench')
    .description('Measure throughput and latency on a synthetic workload (in-flight batching). With no --model or --engine, uses the built-in scribe-7m.')
    .option('--model <model>', `a Hugging Face model folder or Hub id org/name[@revision], downloaded, converted and built (maxBatchSize ${BENCH_MAX_BATCH_SIZE}) on first use (cached)`)
    .option('--engine <engine-dir>', 'an engine folder made by `kiln build`');
  addTargetOptions(command, { forModel: true });
  addKvCacheOptions(command)
    .option('--url <url>', 'drive a running `kiln serve` (or OpenAI-compatible server) over HTTP instead, e.g. http://127.0.0.1:8000')
    .option('--api-key <key>', 'with --url: the server\'s API key (default: $KILN_API_KEY)')
    .option('--num-requests <n>', 'requests to send', '64')
    .option('--warmup <n>', 'requests of the same shape sent first, at the same concurrency, and not measured', '0')
    .option('--input-len <n>', 'prompt tokens per request (random ids)', '128')
    .option('--output-len <n>', 'generated tokens per request (end-of-sequence ignored)', '128')
    .option('--concurrency <n>', 'most requests in flight (default 1, or unbounded with --request-rate)')
    .option('--request-rate <r>', 'Poisson arrivals at r requests per second, or "inf" (default: closed loop)')
    .option('--seed <n>', 'seed of the prompts and arrival times', '0')
    .option('--threads <n>', 'CPU threads for the kernels (default: all cores)')
    .option('--max-batch-size <n>', `maxBatchSize of the engine built for --model (default ${BENCH_MAX_BATCH_SIZE})`)
    .option('--json', 'print one JSON object (vLLM benchmark_serving metric names) instead of a table')
    .option('--verbose', VERBOSE_OPTION_HELP)
    .action(async (options: BenchCommandOptions) => {
      try {
        await bench(options);
      } catch (error) {
        reportCommandError('bench', error);
      }
    });
}
