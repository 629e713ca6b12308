import type {
  NativeEngine,
  NativeExecutorFinishReason,
  NativeExecutorStats,
  NativeIterationEvents,
  NativeIterationStats,
  NativeRequestEvent,
  NativeRequestStats,
} from '@kiln/native';
import { resolveEndId, validateMaxTokens, type SamplingConfig } from '@kiln/sampling';

export type ExecutorFinishReason = NativeExecutorFinishReason;
export type RequestStats = NativeRequestStats;
export type IterationStats = NativeIterationStats;
export type ExecutorStats = NativeExecutorStats;

export interface ExecutorRequest extends SamplingConfig {
  /** The prompt's token ids: at least one, each in [0, vocabSize), fewer than the engine's maxSeqLen. */
  inputIds: readonly number[] | Int32Array;
  /**
   * Tokens to generate at most, a positive integer; no default. Generation stops earlier at the
   * engine's maxSeqLen, with finish reason "length".
   */
  maxTokens: number;
  /** Return the logits of every prompt position, `[promptLength, vocabSize]`, with the first event that has a token. Default false. */
  returnContextLogits?: boolean;
  /** Return, with each event, the logits that chose its tokens, `[outputIds.length, vocabSize]`. Default false. */
  returnGenerationLogits?: boolean;
}

/** What one request produced in one executor iteration. */
export interface ExecutorEvent {
  requestId: number;
  /** The executor iteration (step number) that produced it. */
  iteration: number;
  /** The tokens generated in this iteration (often one; none on a cancellation). */
  outputIds: number[];
  /** Set on the request's last event. */
  finishReason?: ExecutorFinishReason;
  contextLogits?: Float32Array;
  generationLogits?: Float32Array;
  /** Set on the request's last event. */
  stats?: RequestStats;
}

export interface ExecutorStreamOptions {
  /** Aborting cancels the request: the stream ends within one iteration with finish reason "cancelled". Default: none. */
  signal?: AbortSignal;
}

export interface ExecutorResult {
  outputIds: number[];
  finishReason: ExecutorFinishReason;
  contextLogits?: Float32Array;
  generationLogits?: Float32Array;
  stats: RequestStats;
}

/** What the executor must know of its engine to check requests before they reach native code. */
export interface ExecutorEngineFacts {
  engineDir: string;
  vocabSize: number;
  maxSeqLen: number;
  defaultEndId: number | undefined;
  gathersContextLogits: boolean;
}

type Handler = (event: NativeRequestEvent, iteration: number) => void;

/**
 * The engine's in-flight batching executor (TensorRT-LLM's Executor): requests are queued with
 * `enqueue` or `stream`, and one native thread runs them all together, prefill chunks and decode
 * tokens packed into the same steps. Events arrive at most once per iteration for all requests.
 */
export class Executor {
  readonly #native: NativeEngine;
  readonly #facts: ExecutorEngineFacts;
  readonly #handlers = new Map<number, Handler>();
  readonly #iterationListeners = new Set<(stats: IterationStats) => void>();
  #shutdown = false;

  /** Made by `Engine.executor`; one per engine. */
  constructor(native: NativeEngine, facts: ExecutorEngineFacts) {
    this.#native = native;
    this.#facts = facts;
    native.setEventListener((batch) => this.#dispatch(batch));
  }

  #dispatch(batch: NativeIterationEvents): void {
    for (const listener of this.#iterationListeners) listener(batch.stats);
    for (const event of batch.events) {
      const handler = this.#handlers.get(event.id);
      if (!handler) continue;
      if (event.finishReason !== undefined) this.#handlers.delete(event.id);
      handler(event, batch.stats.iteration);
    }
  }

  /**
   * Queues a request and returns its id. `onEvent` receives its events, in order; the last has a
   * finish reason. Throws on an invalid request, naming the field.
   */
  enqueue(request: ExecutorRequest, onEvent?: (event: ExecutorEvent) => void): number {
    if (this.#shutdown) throw new Error(`the executor of ${this.#facts.engineDir} is shut down`);
    const native = this.#checked(request);
    const id = this.#native.enqueue(native);
    this.#handlers.set(id, (event, iteration) => onEvent?.(toEvent(event, iteration)));
    return id;
  }

  /** Cancels a request; it ends at the next iteration with finish reason "cancelled". Unknown ids are ignored. */
  cancel(requestId: number): void {
    this.#native.cancel(requestId);
  }

  /**
   * Queues a request and yields its events as they come. Aborting `signal`, or leaving the loop early,
   * cancels it. A request that fails ends the iteration with its error.
   */
  async *stream(request: ExecutorRequest, options: ExecutorStreamOptions = {}): AsyncGenerator<ExecutorEvent, void, undefined> {
    const { signal } = options;
    signal?.throwIfAborted();
    const queue: [NativeRequestEvent, number][] = [];
    let wake: (() => void) | undefined;
    const id = this.enqueue(request);
    // Replace the handler enqueue installed: this one buffers raw events for the loop below.
    this.#handlers.set(id, (event, iteration) => {
      queue.push([event, iteration]);
      wake?.();
    });
    const onAbort = (): void => this.cancel(id);
    signal?.addEventListener('abort', onAbort, { once: true });
    let finished = false;
    try {
      for (;;) {
        while (queue.length === 0) await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
        const [event, iteration] = queue.shift() as [NativeRequestEvent, number];
        if (event.finishReason === 'error') {
          finished = true;
          throw new Error(`request ${id} failed: ${event.error ?? 'unknown error'} (engine ${this.#facts.engineDir})`);
        }
        const converted = toEvent(event, iteration);
        if (event.finishReason !== undefined) finished = true;
        yield converted;
        if (finished) return;
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      if (!finished) this.cancel(id);  // the consumer left early
    }
  }

  /** Runs one request to its end and gathers its events. */
  async generate(request: ExecutorRequest, options: ExecutorStreamOptions = {}): Promise<ExecutorResult> {
    const outputIds: number[] = [];
    const generationLogits: Float32Array[] = [];
    let contextLogits: Float32Array | undefined;
    for await (const event of this.stream(request, options)) {
      outputIds.push(...event.outputIds);
      if (event.contextLogits) contextLogits = event.contextLogits;
      if (event.generationLogits) generationLogits.push(event.generationLogits);
      if (event.finishReason !== undefined) {
        return {
          outputIds,
          finishReason: event.finishReason,
          contextLogits: request.returnContextLogits ? (contextLogits ?? new Float32Array(0)) : undefined,
          generationLogits: request.returnGenerationLogits ? concat(generationLogits) : undefined,
          stats: event.stats as RequestStats,
        };
      }
    }
    throw new Error('the request ended without a finish reason');
  }

  /** Calls `listener` with every iteration's statistics (for iterations that produced events). Returns the unsubscribe function. */
  onIteration(listener: (stats: IterationStats) => void): () => void {
    this.#iterationListeners.add(listener);
    return () => this.#iterationListeners.delete(listener);
  }

  /** The executor's state now, with its most recent iterations. */
  stats(): ExecutorStats {
    return this.#native.stats();
  }

  /**
   * Stops accepting requests; the queued and running ones finish (or, with `cancel: true`, end with
   * finish reason "cancelled"); resolves once the native thread has stopped and every event was delivered.
   */
  async shutdown(options: { cancel?: boolean } = {}): Promise<void> {
    this.#shutdown = true;
    await this.#native.shutdown({ cancel: options.cancel === true });
  }

  #checked(request: ExecutorRequest) {
    const facts = this.#facts;
    const maxTokens = validateMaxTokens(request.maxTokens);
    const endId = resolveEndId(request, facts.defaultEndId, facts.vocabSize);
    const ids = request.inputIds;
    if (!Array.isArray(ids) && !(ids instanceof Int32Array)) throw new Error('inputIds must be an array of token ids or an Int32Array');
    if (ids.length === 0) throw new Error('the prompt is empty: give at least one token');
    if (ids.length >= facts.maxSeqLen) {
      throw new Error(
        `the prompt has ${ids.length} tokens, but the engine's maxSeqLen is ${facts.maxSeqLen}: ` +
          `a prompt must be shorter than maxSeqLen to leave room for a generated token (engine ${facts.engineDir})`,
      );
    }
    for (let index = 0; index < ids.length; index++) {
      const id = ids[index];
      if (!Number.isInteger(id) || id < 0 || id >= facts.vocabSize) {
        throw new Error(`inputIds[${index}] is ${id}, not a token id of this engine's vocabulary (size ${facts.vocabSize})`);
      }
    }
    const seed = typeof request.seed === 'bigint' ? Number(request.seed & 0x1fffffffffffffn) : request.seed;
    return {
      inputIds: ids instanceof Int32Array ? ids : Int32Array.from(ids),
      maxTokens: Math.min(maxTokens, facts.maxSeqLen - ids.length),
      endId,
      returnContextLogits: request.returnContextLogits === true,
      returnGenerationLogits: request.returnGenerationLogits === true,
      seed,
    };
  }
}

function toEvent(event: NativeRequestEvent, iteration: number): ExecutorEvent {
  return {
    requestId: event.id,
    iteration,
    outputIds: Array.from(event.outputIds),
    finishReason: event.finishReason,
    contextLogits: event.contextLogits,
    generationLogits: event.generationLogits,
    stats: event.stats,
  };
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, part) => n + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
