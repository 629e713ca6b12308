// The Kiln HTTP server: fastify, with JSON schemas on every body, pino JSON logs, an optional API key,
// a body size and a concurrency limit, Prometheus metrics and a graceful shutdown.
import { timingSafeEqual } from 'node:crypto';
import * as path from 'node:path';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import { LLM, type EngineLoadOptions } from '@kiln/runtime';
import { loadChatTemplate, loadChatTemplateFile } from '@kiln/chat';
import { ServerContext } from './context';
import { ApiError, errorBody, protocolOf, toApiError } from './errors';
import { ServerMetrics } from './metrics';
import { registerOpenAIRoutes } from './openai';
import { OFFLOAD_JSON_BYTES, type JsonUpload } from './tokenize-pool';
import { registerTritonRoutes } from './triton';

// Read at run time: package.json sits outside the compiled `src/` tree.
const { version } = require('../package.json') as { version: string };

export const DEFAULT_BODY_LIMIT = 1024 * 1024;
export const DEFAULT_MAX_CONCURRENT_REQUESTS = 256;
export const DEFAULT_SHUTDOWN_GRACE_MS = 30_000;

export interface ServerOptions {
  /** The loaded model. With `ownsLlm`, `close()` disposes it. */
  llm: LLM;
  ownsLlm?: boolean;
  /** The name clients must give as `model` (and in /v2/models/{model}). Default: the engine folder's name. */
  modelName?: string;
  /** When set, every route but the health checks needs `Authorization: Bearer <apiKey>`. Default: none. */
  apiKey?: string;
  /** Largest request body in bytes. Default 1 MiB. */
  bodyLimit?: number;
  /** Most generation requests in flight; more get 429. Default 256. */
  maxConcurrentRequests?: number;
  /**
   * How long a streamed response may wait for a client that stopped reading (its request paused, KV
   * blocks held) before the connection is closed and the request cancelled. Default 60 s.
   */
  stalledStreamTimeoutMs?: number;
  /** pino options, `false` for none. Default: JSON logs at "info" on stdout. */
  logger?: FastifyServerOptions['logger'];
  /** A Jinja chat template file used instead of the model's own (`kiln serve --chat-template`). Default: the model's. */
  chatTemplateFile?: string;
}

export interface ListenOptions {
  /** Default 127.0.0.1 (loopback only). */
  host?: string;
  /** Default 8000; 0 picks a free port. */
  port?: number;
}

export interface CloseOptions {
  /** How long requests in flight may take to finish before they are cancelled. Default 30 s. */
  graceMs?: number;
}

// Liveness and readiness stay open without the key, so orchestrators can probe.
const PUBLIC_ROUTES = new Set(['/health', '/v2/health/live', '/v2/health/ready']);

/** The parsing worker died with the body: the client may retry. */
function workerFailed(): ApiError {
  return new ApiError(503, 'the request body could not be parsed (the parsing worker stopped): retry', 'server_error', null, 'worker_failed');
}

/** A body error as fastify's own parser makes them (errors.ts turns them into each protocol's shape). */
function bodyError(statusCode: number, code: string, message: string): Error {
  return Object.assign(new Error(message), { statusCode, code });
}

function sameKey(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

export class KilnServer {
  readonly app: FastifyInstance;
  readonly llm: LLM;
  readonly metrics: ServerMetrics;
  readonly #ctx: ServerContext;
  readonly #ownsLlm: boolean;
  #closing: Promise<void> | undefined;

  private constructor(app: FastifyInstance, ctx: ServerContext, ownsLlm: boolean) {
    this.app = app;
    this.#ctx = ctx;
    this.llm = ctx.llm;
    this.metrics = ctx.metrics;
    this.#ownsLlm = ownsLlm;
  }

  get modelName(): string {
    return this.#ctx.modelName;
  }

  static async create(options: ServerOptions): Promise<KilnServer> {
    const { llm } = options;
    const modelName = options.modelName ?? path.basename(llm.engine.engineDir);
    const chatTemplate = options.chatTemplateFile
      ? await loadChatTemplateFile(options.chatTemplateFile, llm.engine.engineDir)
      : await loadChatTemplate(llm.engine.engineDir);
    const maxConcurrent = options.maxConcurrentRequests ?? DEFAULT_MAX_CONCURRENT_REQUESTS;
    let ctx: ServerContext | undefined;
    const metrics = new ServerMetrics(
      () => {
        try {
          return llm.engine.executor.stats();
        } catch {
          return undefined;  // disposed: nothing to report
        }
      },
      () => ctx?.inFlight ?? 0,
    );
    ctx = new ServerContext(llm, modelName, chatTemplate, metrics, maxConcurrent, options.stalledStreamTimeoutMs);
    const app = Fastify({
      logger: options.logger ?? { level: 'info' },
      bodyLimit: options.bodyLimit ?? DEFAULT_BODY_LIMIT,
      // Wrong types are client errors, not values to convert; unknown fields are kept (and ignored).
      ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false, allErrors: false, allowUnionTypes: true } },
      return503OnClosing: true,
    });
    const server = new KilnServer(app, ctx, options.ownsLlm === true);
    server.#install(options.apiKey);
    await app.ready();
    ctx.tokenizePool.start();
    return server;
  }

  #install(apiKey: string | undefined): void {
    const { app, metrics } = this;
    const ctx = this.#ctx;
    // Large JSON bodies are streamed to the worker thread as they arrive, decoded and parsed there
    // (TokenizePool.parseJson): the event loop never holds a large body whole (a 1 MB concatenation
    // and its copy, and their garbage collection, held /health for tens of ms). Small bodies go through
    // fastify's own parser. The body limit is checked as the bytes come, as fastify does.
    const defaultJsonParser = app.getDefaultJsonParser('error', 'error');
    const bodyLimit = app.initialConfig.bodyLimit ?? DEFAULT_BODY_LIMIT;
    app.removeContentTypeParser('application/json');
    app.addContentTypeParser('application/json', (request, payload, done) => {
      const declared = Number(request.headers['content-length']);
      if (declared > bodyLimit) return done(bodyError(413, 'FST_ERR_CTP_BODY_TOO_LARGE', 'Request body is too large'), undefined);
      const chunks: Buffer[] = [];
      let received = 0;
      let upload: JsonUpload | undefined;
      let finished = false;
      const finish = (error: Error | null, value?: unknown): void => {
        if (finished) return;
        finished = true;
        payload.removeListener('data', onData);
        payload.removeListener('end', onEnd);
        payload.removeListener('error', onEnd);
        done(error, value);
      };
      const onData = (chunk: Buffer | string): void => {
        const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
        received += bytes.length;
        if (received > bodyLimit) {
          upload?.discard();
          return finish(bodyError(413, 'FST_ERR_CTP_BODY_TOO_LARGE', 'Request body is too large'));
        }
        if (upload) return upload.write(bytes);
        chunks.push(bytes);
        if (received >= OFFLOAD_JSON_BYTES) {
          upload = ctx.tokenizePool.parseJson(request.url.split('?')[0]);
          for (const piece of chunks.splice(0)) upload.write(piece);
        }
      };
      const onEnd = (error?: Error): void => {
        if (error) {
          upload?.discard();
          return finish(Object.assign(error, { statusCode: (error as { statusCode?: number }).statusCode ?? 400 }));
        }
        if (!Number.isNaN(declared) && received !== declared) {
          upload?.discard();
          return finish(bodyError(400, 'FST_ERR_CTP_INVALID_CONTENT_LENGTH', 'Request body size did not match Content-Length'));
        }
        if (!upload) {
          const text = chunks.length === 1 ? chunks[0].toString('utf8') : Buffer.concat(chunks, received).toString('utf8');
          void defaultJsonParser(request, text, (error, value) => finish(error, value));
          return;
        }
        upload.end().then((result) => {
          if ('value' in result) {
            if (typeof result.value === 'object' && result.value !== null) {
              if (result.words !== undefined) ctx.workerWords.set(result.value, result.words);
              if (result.stopWordsError !== undefined) ctx.workerStopWordsErrors.set(result.value, result.stopWordsError);
            }
            // The rest of the request (validation, planning) runs synchronously from `done`: one
            // large request per event loop iteration.
            return ctx.runHeavy(() => finish(null, result.value));
          }
          if ('invalid' in result) return finish(bodyError(400, 'FST_ERR_CTP_INVALID_JSON_BODY', "Body is not valid JSON but content-type is set to 'application/json'"));
          if ('poisoned' in result) return finish(bodyError(400, 'FST_ERR_CTP_INVALID_JSON_BODY', result.poisoned));
          return finish(workerFailed());
        }, () => finish(workerFailed()));
      };
      payload.on('data', onData);
      payload.on('end', onEnd);
      payload.on('error', onEnd);
      payload.resume();
    });
    app.addHook('onRequest', async (request, reply) => {
      const route = request.routeOptions.url ?? 'unmatched';
      reply.raw.once('close', () => {
        const status = reply.raw.writableFinished ? reply.raw.statusCode : 499;
        metrics.requests.inc({ route, status: String(status) });
      });
      if (apiKey === undefined || PUBLIC_ROUTES.has(route)) return;
      const header = request.headers.authorization;
      const given = typeof header === 'string' && header.startsWith('Bearer ') ? header.slice(7).trim() : undefined;
      if (given === undefined || !sameKey(given, apiKey)) {
        throw new ApiError(401, given === undefined ? 'missing API key: send Authorization: Bearer <key>' : 'incorrect API key', 'authentication_error', null, 'invalid_api_key');
      }
    });
    app.setErrorHandler((error, request, reply) => {
      const protocol = protocolOf(request.url);
      const apiError = toApiError(error, protocol);
      if (apiError.statusCode >= 500) request.log.error({ err: error }, 'request failed');
      if (apiError.statusCode === 401) reply.header('www-authenticate', 'Bearer');
      return reply.code(apiError.statusCode).send(errorBody(protocol, apiError));
    });
    app.setNotFoundHandler((request, reply) => {
      const protocol = protocolOf(request.url);
      const error = new ApiError(404, `no route ${request.method} ${request.url.split('?')[0]}`, 'not_found_error', null, 'not_found');
      return reply.code(404).send(errorBody(protocol, error));
    });
    app.get('/health', async (_request, reply) => reply.code(ctx.draining ? 503 : 200).send({ status: ctx.draining ? 'draining' : 'ok' }));
    app.get('/metrics', async (_request, reply) => {
      reply.header('content-type', metrics.registry.contentType);
      return metrics.registry.metrics();
    });
    registerOpenAIRoutes(app, ctx);
    registerTritonRoutes(app, ctx, version);
  }

  /** Starts listening; resolves with the base URL (http://host:port). */
  async listen(options: ListenOptions = {}): Promise<string> {
    const host = options.host ?? '127.0.0.1';
    await this.app.listen({ host, port: options.port ?? 8000 });
    const address = this.app.server.address();
    if (address === null || typeof address === 'string') return String(address);
    const hostPart = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    return `http://${hostPart}:${address.port}`;
  }

  /**
   * Graceful shutdown: stop admitting (new generation requests get 503, readiness turns 503), let the
   * requests in flight finish for up to `graceMs`, cancel the rest, close the listener, stop the
   * executor and, when the server owns it, free the model. Idempotent.
   */
  close(options: CloseOptions = {}): Promise<void> {
    this.#closing ??= (async () => {
      const ctx = this.#ctx;
      ctx.draining = true;
      const graceMs = options.graceMs ?? DEFAULT_SHUTDOWN_GRACE_MS;
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        ctx.whenIdle().then(() => false),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), graceMs))),
      ]);
      clearTimeout(timer);
      if (timedOut) {
        this.app.log.warn({ inFlight: ctx.inFlight }, 'shutdown: cancelling the requests still in flight');
        ctx.abortAll();
        await ctx.whenIdle();
      }
      await this.app.close();
      await ctx.tokenizePool.close();
      if (this.#ownsLlm) {
        await this.llm.engine.executor.shutdown({ cancel: true });
        this.llm.dispose();
      }
    })();
    return this.#closing;
  }
}

export interface StartServerOptions extends Omit<ServerOptions, 'llm' | 'ownsLlm'>, ListenOptions {
  /** An engine directory made by @kiln/builder (`kiln build`), for the CPU or a CUDA GPU. */
  engineDir: string;
  /**
   * How to load it: kernel threads, the KV cache's size (kvCacheTokens, kvCacheBytes,
   * kvCacheMemoryFraction: on a cuda engine a fraction of the device memory free after loading), executor
   * limits. Default: EngineLoadOptions' defaults (on cuda, a KV cache of min(maxBatchSize x maxSeqLen
   * tokens, 0.9 of the free device memory)).
   */
  engineOptions?: EngineLoadOptions;
}

/** Loads an engine directory and serves it; the returned server owns the model. */
export async function startServer(options: StartServerOptions): Promise<{ server: KilnServer; url: string }> {
  const { engineDir, engineOptions, host, port, ...serverOptions } = options;
  const llm = await LLM.load(engineDir, engineOptions);
  let server: KilnServer;
  try {
    server = await KilnServer.create({ ...serverOptions, llm, ownsLlm: true });
  } catch (error) {
    llm.dispose();
    throw error;
  }
  try {
    return { server, url: await server.listen({ host, port }) };
  } catch (error) {
    await server.close({ graceMs: 0 });
    throw error;
  }
}
