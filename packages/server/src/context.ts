// What every route needs: the model, its limits, admission (concurrency limit, draining), the SSE writer.
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { LLM } from '@kiln/runtime';
import { MAX_SEQUENCE_TOKENS } from '@kiln/sampling';
import type { ChatTemplate } from '@kiln/chat';
import { ApiError, type Protocol } from './errors';
import type { ServerMetrics } from './metrics';
import { TokenizePool, type TokenizeItem, type WorkerWords } from './tokenize-pool';

/** The reason a shutdown aborts the requests still in flight with (a client disconnect has another). */
export class ShutdownAbort extends Error {
  constructor() {
    super('the server is shutting down: the request was cancelled before it finished');
    this.name = 'ShutdownAbort';
  }
}

/** Whether `signal` was aborted by the server's shutdown (rather than by the client going away). */
export function abortedByShutdown(signal: AbortSignal): boolean {
  return signal.aborted && signal.reason instanceof ShutdownAbort;
}

export const DEFAULT_STALLED_STREAM_TIMEOUT_MS = 60_000;

export interface Admission {
  /** Aborted when the client disconnects before the response is complete, or at shutdown. */
  signal: AbortSignal;
}

export class ServerContext {
  readonly #active = new Set<AbortController>();
  #idle: (() => void)[] = [];
  draining = false;
  readonly tokenizePool: TokenizePool;

  constructor(
    readonly llm: LLM,
    readonly modelName: string,
    readonly chatTemplate: ChatTemplate | undefined,
    readonly metrics: ServerMetrics,
    readonly maxConcurrentRequests: number,
    /** How long a stream may wait for its client to read before it is cancelled (see SseWriter). */
    readonly stalledStreamTimeoutMs: number = DEFAULT_STALLED_STREAM_TIMEOUT_MS,
  ) {
    this.tokenizePool = new TokenizePool(llm);
  }

  /**
   * The bad words of bodies parsed on the worker, checked and tokenized there (TokenizePool.parseJson),
   * by body: routes take them instead of tokenizing `bad_words` (which then holds markers).
   */
  readonly workerWords = new WeakMap<object, WorkerWords>();

  /** Triton's stop_words (the string form) that the worker refused while splitting them, by body. */
  readonly workerStopWordsErrors = new WeakMap<object, string>();

  /** Throws the worker's refusal of a body's stop_words, if it made one. */
  checkStopWordsFromWorker(body: object): void {
    const error = this.workerStopWordsErrors.get(body);
    if (error !== undefined) throw new ApiError(400, error, 'invalid_request_error', 'stop_words');
  }

  /** The token ids of a body's bad words that the worker tokenized, or undefined; throws its refusal. */
  badWordsFromWorker(body: object): number[][] | undefined {
    const words = this.workerWords.get(body);
    if (words === undefined) return undefined;
    if ('error' in words) throw new ApiError(400, words.error, 'invalid_request_error', 'bad_words');
    return words.ids.map((ids) => Array.from(ids));
  }

  readonly #heavy: (() => void)[] = [];
  #heavyScheduled = false;

  /**
   * Runs `job` (the synchronous part of handling a large request: validating a big body, preparing its
   * tokenization) in an event loop iteration of its own, after the jobs queued before it. Several large
   * requests arriving together would otherwise run back to back in one iteration, holding /health for
   * their sum; one at a time, a poll for I/O comes between any two.
   */
  runHeavy(job: () => void): void {
    this.#heavy.push(job);
    if (!this.#heavyScheduled) this.#scheduleHeavy();
  }

  #scheduleHeavy(): void {
    this.#heavyScheduled = true;
    // An immediate queued while immediates run waits for the next iteration, after its I/O poll.
    setImmediate(() => {
      const job = this.#heavy.shift();
      try {
        job?.();
      } finally {
        if (this.#heavy.length > 0) this.#scheduleHeavy();
        else this.#heavyScheduled = false;
      }
    });
  }

  get inFlight(): number {
    return this.#active.size;
  }

  get maxSeqLen(): number {
    return this.llm.engine.maxSeqLen;
  }

  checkModel(model: string, protocol: Protocol): void {
    if (model === this.modelName) return;
    const message = protocol === 'triton'
      ? `Request for unknown model: '${model}' is not found (this server serves '${this.modelName}')`
      : `The model \`${model}\` does not exist (this server serves \`${this.modelName}\`)`;
    throw new ApiError(404, message, 'not_found_error', 'model', 'model_not_found');
  }

  /**
   * Admits a generation request: refused with 503 while draining and 429 beyond the concurrency limit.
   * The admission ends when the response is closed, whether it completed or the client went away; in
   * the second case its signal aborts, which cancels its executor requests and frees their KV blocks.
   */
  admit(reply: FastifyReply): Admission {
    if (this.draining) throw new ApiError(503, 'the server is shutting down', 'server_error', null, 'shutting_down');
    if (this.#active.size >= this.maxConcurrentRequests) {
      throw new ApiError(429, `the server is at its limit of ${this.maxConcurrentRequests} concurrent requests: retry later`, 'rate_limit_error', null, 'too_many_requests');
    }
    const controller = new AbortController();
    this.#active.add(controller);
    // The response's 'close' comes once, after it finished or when the connection dropped first.
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) controller.abort(new Error('client disconnected'));
      this.#active.delete(controller);
      if (this.#active.size === 0) for (const resolve of this.#idle.splice(0)) resolve();
    });
    return { signal: controller.signal };
  }

  /** Resolves when no generation request is in flight. */
  whenIdle(): Promise<void> {
    if (this.#active.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  /** Cancels every request in flight. */
  abortAll(): void {
    for (const controller of this.#active) controller.abort(new ShutdownAbort());
  }

  /**
   * Token ids of several texts at once, off the event loop when they are large (see TokenizePool). Each
   * must give at least one token, and pass its `check` (a length limit, which throws an ApiError)
   * before any is turned into an array; `param` names the request field in the error.
   */
  async tokenizeMany(items: (TokenizeItem & { param: string; check?: (length: number, index: number) => void; prompt?: boolean })[]): Promise<number[][]> {
    if (items.length === 0) return [];
    // A prompt whose length alone shows that it cannot fit the context is refused before any
    // tokenizing (and one the worker kept, see TokenizePool.oversized, always is).
    for (const item of items) {
      const kept = this.tokenizePool.oversizedLength(item.text);
      if (item.prompt) this.checkPromptCharacters(kept ?? item.text.length, item.param);
      if (kept !== undefined) throw this.#tooLong(item.param, kept);
    }
    const ids = await this.tokenizePool.encode(items.map(({ text, addSpecialTokens }) => ({ text, addSpecialTokens })));
    ids.forEach((list, i) => {
      if (list.length === 0) throw new ApiError(400, `${items[i].param} is empty: it must hold at least one token`, 'invalid_request_error', items[i].param);
      items[i].check?.(list.length, i);
    });
    return ids.map((list) => Array.from(list));
  }

  /** A check for tokenizeMany: a bad word may be MAX_SEQUENCE_TOKENS tokens long (as the runtime allows). */
  badWordCheck(param: string, index: number): (length: number) => void {
    return (length) => {
      if (length > MAX_SEQUENCE_TOKENS) {
        throw new ApiError(400, `${param}[${index}] is ${length} tokens long, more than the ${MAX_SEQUENCE_TOKENS} allowed`, 'invalid_request_error', param);
      }
    };
  }

  /**
   * Refuses a prompt of `length` characters that needs at least maxSeqLen tokens whatever it holds (a
   * token stands for at most Tokenizer.maxCharactersPerToken characters), as checkLengths would after
   * tokenizing it. Tokenizers without that bound pass.
   */
  checkPromptCharacters(length: number, promptParam: string): void {
    const perToken = this.llm.tokenizer.maxCharactersPerToken;
    if (perToken !== undefined && Math.ceil(length / perToken) >= this.maxSeqLen) throw this.#tooLong(promptParam, length);
  }

  /** The length of a chat message's content that the worker kept (too long for any prompt), else undefined. */
  oversizedLength(text: string): number | undefined {
    return this.tokenizePool.oversizedLength(text);
  }

  #tooLong(promptParam: string, length: number): ApiError {
    const perToken = this.llm.tokenizer.maxCharactersPerToken ?? 1;
    return new ApiError(
      400,
      `This model's maximum context length is ${this.maxSeqLen} tokens, and ${promptParam} holds ${length} characters: at least ` +
        `${Math.ceil(length / perToken)} tokens (a token of this model stands for at most ${perToken} characters). It must be shorter, to leave room for at least one generated token.`,
      'invalid_request_error', promptParam, 'context_length_exceeded',
    );
  }

  /** A check for tokenizeMany: a prompt must leave room for one generated token (see checkLengths). */
  promptCheck(promptParam: string, maxTokensParam: string): (length: number) => void {
    return (length) => void this.checkLengths(length, undefined, promptParam, maxTokensParam);
  }

  /**
   * Token ids of `text`. `addSpecialTokens` (default true, as for a completion prompt) adds what the
   * tokenizer's post-processor adds (a BOS, say); a rendered chat template already holds its special
   * tokens and bad words are fragments, so those pass false (as vLLM does).
   */
  tokenize(text: string, param: string, addSpecialTokens = true): number[] {
    const ids = this.llm.tokenizer.encode(text, { addSpecialTokens });
    if (ids.length === 0) throw new ApiError(400, `${param} is empty: it must hold at least one token`, 'invalid_request_error', param);
    return ids;
  }

  checkTokenIds(ids: number[], param: string): number[] {
    if (ids.length === 0) throw new ApiError(400, `${param} is empty: it must hold at least one token`, 'invalid_request_error', param);
    const vocabSize = this.llm.engine.vocabSize;
    const bad = ids.findIndex((id) => !Number.isSafeInteger(id) || id < 0 || id >= vocabSize);
    if (bad >= 0) throw new ApiError(400, `${param}[${bad}] is ${ids[bad]}, not a token id of this model (vocabulary size ${vocabSize})`, 'invalid_request_error', param);
    return ids;
  }

  /**
   * Checks the prompt length and max_tokens against the engine's maxSeqLen, as vLLM does: both must
   * fit, the request is not silently shortened. `maxTokens` undefined: all the room left.
   */
  checkLengths(promptLength: number, maxTokens: number | undefined, promptParam: string, maxTokensParam: string): number {
    const limit = this.maxSeqLen;
    if (promptLength >= limit) {
      throw new ApiError(
        400,
        `This model's maximum context length is ${limit} tokens, and the ${promptParam} has ${promptLength}: it must be shorter, to leave room for at least one generated token.`,
        'invalid_request_error', promptParam, 'context_length_exceeded',
      );
    }
    if (maxTokens === undefined) return limit - promptLength;
    if (promptLength + maxTokens > limit) {
      throw new ApiError(
        400,
        `This model's maximum context length is ${limit} tokens. However, you requested ${promptLength + maxTokens} tokens (${promptLength} in the ${promptParam}, ${maxTokens} for the completion): reduce ${maxTokensParam} to at most ${limit - promptLength}.`,
        'invalid_request_error', maxTokensParam, 'context_length_exceeded',
      );
    }
    return maxTokens;
  }
}

/**
 * A Server-Sent Events response written directly on the socket (the reply is hijacked from fastify),
 * with backpressure: `send` reports when the socket's buffer is past its high-water mark, and the caller
 * then waits on `writable()` (pausing its generation) instead of writing on. What a client that stopped
 * reading can make the server hold is one buffer (16 KiB and the last event), not its whole output; a
 * client that reads nothing for `stallTimeoutMs` has its connection closed, which cancels the request
 * and frees its KV blocks. `Connection: close` from the client is honoured: the socket is closed after
 * the stream.
 */
export class SseWriter {
  readonly #reply: FastifyReply;
  readonly #stallTimeoutMs: number;
  #waiting: Promise<boolean> | undefined;

  constructor(reply: FastifyReply, request: FastifyRequest, stallTimeoutMs: number = DEFAULT_STALLED_STREAM_TIMEOUT_MS) {
    this.#reply = reply;
    this.#stallTimeoutMs = stallTimeoutMs;
    const close = /(^|,)\s*close\s*(,|$)/i.test(String(request.headers.connection ?? ''));
    reply.hijack();
    reply.raw.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: close ? 'close' : 'keep-alive',
      'x-accel-buffering': 'no',
    });
  }

  get open(): boolean {
    return !this.#reply.raw.destroyed && !this.#reply.raw.writableEnded;
  }

  /** Writes one event; false when the socket's buffer is full (wait for `writable()` before the next). */
  send(data: unknown): boolean {
    if (!this.open) return true;
    return this.#reply.raw.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
  }

  /** Whether the socket's buffer is past its high-water mark. */
  get blocked(): boolean {
    return this.open && this.#reply.raw.writableNeedDrain;
  }

  /**
   * Resolves true once the client has read the buffer down (at once when it is not full), false when
   * the connection closed or the client read nothing for the stall timeout (the connection is then
   * destroyed: its request is cancelled through the response's 'close').
   */
  writable(): Promise<boolean> {
    if (!this.open) return Promise.resolve(false);
    if (!this.blocked) return Promise.resolve(true);
    // One wait shared by every choice of the response (one listener each for drain and close).
    this.#waiting ??= new Promise<boolean>((resolve) => {
      const raw = this.#reply.raw;
      const done = (ok: boolean): void => {
        clearTimeout(timer);
        raw.off('drain', onDrain);
        raw.off('close', onClose);
        this.#waiting = undefined;
        resolve(ok);
      };
      const onDrain = (): void => done(true);
      const onClose = (): void => done(false);
      const timer = setTimeout(() => {
        done(false);
        raw.destroy();
      }, this.#stallTimeoutMs);
      raw.on('drain', onDrain);
      raw.on('close', onClose);
    });
    return this.#waiting;
  }

  end(): void {
    if (this.open) this.#reply.raw.end();
  }
}
