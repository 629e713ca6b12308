import * as fs from 'node:fs';
import * as path from 'node:path';
import { isHubModelId } from '@kiln/hub';
import type { Command } from 'commander';
import { DEFAULT_BODY_LIMIT, DEFAULT_MAX_CONCURRENT_REQUESTS, startServer } from '@kiln/server';
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

/** maxBatchSize of the engines `kiln serve` builds for --model (or the default model): room for many clients. */
export const SERVE_MAX_BATCH_SIZE = 64;
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

interface ServeCommandOptions extends TargetFlags, KvCacheFlags {
  model?: string;
  engine?: string;
  host: string;
  port: string;
  apiKey?: string;
  modelName?: string;
  maxBodyBytes: string;
  maxConcurrency: string;
  threads?: string;
  maxBatchSize?: string;
  shutdownTimeout: string;
  logLevel: string;
  quiet?: boolean;
  verbose?: boolean;
  chatTemplate?: string;
}

function parsePort(value: string): number {
  const port = /^\s*[0-9]+\s*$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(port) || port > 65535) throw new CliError(`--port: expected 0 to 65535, got ${JSON.stringify(value)}`);
  return port;
}

async function serve(options: ServeCommandOptions): Promise<void> {
  if (options.model !== undefined && options.engine !== undefined) throw new CliError('give --model or --engine, not both');
  const port = parsePort(options.port);
  const bodyLimit = parsePositiveInteger('--max-body-bytes', options.maxBodyBytes);
  const maxConcurrentRequests = parsePositiveInteger('--max-concurrency', options.maxConcurrency);
  const numThreads = options.threads === undefined ? undefined : parsePositiveInteger('--threads', options.threads);
  const maxBatchSize = options.maxBatchSize === undefined ? SERVE_MAX_BATCH_SIZE : parsePositiveInteger('--max-batch-size', options.maxBatchSize);
  const shutdownSeconds = Number(options.shutdownTimeout);
  if (!(shutdownSeconds >= 0)) throw new CliError(`--shutdown-timeout: expected a number of seconds >= 0, got ${JSON.stringify(options.shutdownTimeout)}`);
  const level = options.quiet ? 'silent' : options.logLevel;
  if (!LOG_LEVELS.includes(level)) throw new CliError(`--log-level: expected one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(level)}`);
  const apiKey = options.apiKey ?? (process.env.KILN_API_KEY || undefined);
  const targetConfig = modelTargetConfig(options);
  const kvCache = kvCacheOptionsFromFlags(options);

  let engineDir = options.engine;
  if (engineDir === undefined) engineDir = await engineForModel(options.model, { ...targetConfig, maxBatchSize });
  // A Hub id serves under its own name (org/name); a folder under its base name.
  const hubId = options.model !== undefined && isHubModelId(options.model) && !fs.existsSync(options.model) ? options.model.split('@')[0] : undefined;
  const modelName =
    options.modelName ??
    (options.engine !== undefined ? path.basename(path.resolve(options.engine)) : (hubId ?? (options.model !== undefined ? path.basename(path.resolve(options.model)) : 'scribe-7m')));

  const { server, url } = await startServer({
    engineDir,
    engineOptions: { numThreads, ...kvCache },
    host: options.host,
    port,
    apiKey,
    modelName,
    bodyLimit,
    maxConcurrentRequests,
    logger: { level },
    chatTemplateFile: options.chatTemplate,
  });
  if (options.verbose) process.stderr.write(`kiln serve: ${describeEngine(server.llm.info)}\n`);
  process.stderr.write(`kiln serve: ${modelName} listening on ${url}${apiKey ? ' (API key required)' : ''}\n`);

  // First signal: drain (stop admitting, let requests finish for --shutdown-timeout, cancel the rest), then exit.
  // A second signal exits at once.
  await new Promise<void>((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      const force = (): never => process.exit(signal === 'SIGINT' ? 130 : 143);
      process.once('SIGINT', force);
      process.once('SIGTERM', force);
      process.stderr.write(`kiln serve: ${signal}: finishing the requests in flight, then exiting\n`);
      server.close({ graceMs: shutdownSeconds * 1000 }).then(resolve, (error: unknown) => {
        process.stderr.write(`kiln serve: shutdown failed: ${(error as Error).message}\n`);
        process.exitCode = 1;
        resolve();
      });
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}

export function registerServeCommand(program: Command): void {
  const command = program
    .command('serve')
    .description('Serve a model over HTTP: OpenAI-compatible /v1, Triton generate /v2, /health, /metrics. With no --model or --engine, serves the built-in scribe-7m.')
    .option('--model <model>', `a Hugging Face model folder or Hub id org/name[@revision], downloaded, converted and built (maxBatchSize ${SERVE_MAX_BATCH_SIZE}) on first use (cached)`)
    .option('--engine <engine-dir>', 'an engine folder made by `kiln build`');
  addTargetOptions(command, { forModel: true });
  addKvCacheOptions(command)
    .option('--host <host>', 'address to listen on (loopback by default; 0.0.0.0 exposes it)', '127.0.0.1')
    .option('--port <port>', 'port to listen on (0: any free port)', '8000')
    .option('--api-key <key>', 'require "Authorization: Bearer <key>" on every route but health (default: $KILN_API_KEY)')
    .option('--chat-template <file>', 'a Jinja chat template for /v1/chat/completions instead of the model\'s own')
    .option('--model-name <name>', 'the model name clients send (default: the model or engine folder name, or scribe-7m)')
    .option('--max-body-bytes <n>', 'largest request body', String(DEFAULT_BODY_LIMIT))
    .option('--max-concurrency <n>', 'most generation requests in flight; more get 429', String(DEFAULT_MAX_CONCURRENT_REQUESTS))
    .option('--threads <n>', 'CPU threads for the kernels (default: all cores)')
    .option('--max-batch-size <n>', `maxBatchSize of the engine built for --model (default ${SERVE_MAX_BATCH_SIZE})`)
    .option('--shutdown-timeout <seconds>', 'on SIGINT/SIGTERM, how long requests in flight may run before they are cancelled', '30')
    .option('--log-level <level>', `JSON log level on stdout: ${LOG_LEVELS.join(', ')}`, 'info')
    .option('--quiet', 'no logs (same as --log-level silent)')
    .option('--verbose', VERBOSE_OPTION_HELP)
    .action(async (options: ServeCommandOptions) => {
      try {
        await serve(options);
      } catch (error) {
        reportCommandError('serve', error);
      }
    });
}
