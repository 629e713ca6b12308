import { randomBytes } from 'node:crypto';
import type {
  NativeEngine,
  NativeExecutorFinishReason,
  NativeExecutorRequest,
  NativeExecutorStats,
  NativeIterationEvents,
  NativeIterationStats,
  NativeRequestEvent,
  NativeRequestStats,
} from '@kiln/native';
import {
  resolveEndId,
  SamplingConfigError,
  validateMaxTokens,
  validateSamplingConfig,
  type ResolvedSamplingConfig,
  type SamplingConfig,
  type TokenLogprobs,
} from '@kiln/sampling';
import type { TokenMaskSource } from '@kiln/chat';

/**
 * How a request ended (one rule for every entry point, docs/cancellation.md):
 * - `eos`: it generated its end id (the model's end-of-sequence token, or `endId`);
 * - `stop`: a stop sequence matched (`stopWords`: token ids here, text in LLM);
 * - `length`: `maxTokens`, or the engine's maxSeqLen, was reached;
 * - `cancelled`: its `signal` was aborted (before or during the call), the consumer left the stream,
 *   or the engine was disposed / shut down with `cancel: true`;
 * - `error` (executor events only; `generate` rejects instead): the step that ran it failed.
 */
export type ExecutorFinishReason = 'eos' | 'stop' | 'length' | 'cancelled' | 'error';
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
  /**
   * Constrained decoding: the allowed tokens of every step, from a grammar (@kiln/chat's
   * CompiledFormat.maskSource(); LLM's `responseFormat` makes one). The native sampler masks every other
   * token before all other controls, in every sampling mode, beam search included. The request waits
   * for each mask (computed on this thread, well under a millisecond) while the others take their
   * steps. Only with `stream` and `generate`, one sequence or beam search. It is disposed when the
   * request ends. Default: none.
   */
  tokenMask?: TokenMaskSource;
}

/** Log-probabilities of one output token: the chosen token's and the `logprobs` most likely at its step. */
export type ExecutorTokenLogprobs = Omit<TokenLogprobs, 'token'>;

/** One returned sequence of a request with `numReturnSequences` > 1 or beam search, best first. */
export interface ExecutorSequence {
  outputIds: number[];
  finishReason: Exclude<ExecutorFinishReason, 'error'>;
  /**
   * Beam search: transformers' `sequences_scores`, the sum of the log-probabilities divided by
   * `outputIds.length ** lengthPenalty`. Independent samples: the sum of the sampled tokens' log-probabilities.
   */
  score: number;
  logprobs?: ExecutorTokenLogprobs[];
}

/** What one request produced in one executor iteration. */
export interface ExecutorEvent {
  /** The id `enqueue` returned; 0 for a request whose signal was aborted before the call (never queued). */
  requestId: number;
  /** The executor iteration (step number) that produced it. */
  iteration: number;
  /** The tokens generated in this iteration (often one; none on a cancellation). */
  outputIds: number[];
  /** Set on the request's last event. */
  finishReason?: ExecutorFinishReason;
  contextLogits?: Float32Array;
  generationLogits?: Float32Array;
  /** With `logprobs` (a number, 0 included): one entry per output id, `{logprob, top: [{token, logprob}]}`. */
  logprobs?: ExecutorTokenLogprobs[];
  /**
   * Beam search, on the last event: the best `numReturnSequences` beams, best first; `outputIds` then
   * holds the best one (a beam search request has no earlier tokens: beams reorder until the end).
   */
  sequences?: ExecutorSequence[];
  /** Set on the request's last event. */
  stats?: RequestStats;
}

export interface ExecutorStreamOptions {
  /**
   * Cancels the request when aborted (the rule every entry point follows, docs/cancellation.md): aborted
   * before the call, the request is not queued and the call ends at once with finish reason "cancelled",
   * no tokens and zero timings; aborted during it, the request leaves the executor at its next
   * iteration (at most the step running then adds a token), its KV blocks are freed, and the call ends
   * with "cancelled" and the tokens so far. Never an AbortError. Default: none.
   */
  signal?: AbortSignal;
}

export interface ExecutorResult {
  /** The best (or only) sequence's output ids. */
  outputIds: number[];
  finishReason: Exclude<ExecutorFinishReason, 'error'>;
  contextLogits?: Float32Array;
  generationLogits?: Float32Array;
  /** With `logprobs`: one entry per output id. */
  logprobs?: ExecutorTokenLogprobs[];
  /** With `numReturnSequences` > 1: every returned sequence, best first for beams (in sample order otherwise). */
  sequences?: ExecutorSequence[];
  stats: RequestStats;
}

/** What the executor must know of its engine to check requests before they reach native code. */
export interface ExecutorEngineFacts {
  engineDir: string;
  vocabSize: number;
  maxSeqLen: number;
  defaultEndId: number | undefined;
  gathersContextLogits: boolean;
  /** The engine's largest beam width (its header's limits.maxBeamWidth). */
  maxBeamWidth: number;
}

/** A request checked and resolved for the native executor, with what the TypeScript side keeps of it. */
export interface CheckedRequest {
  native: NativeExecutorRequest;
  tokenMask?: TokenMaskSource;
  resolved: ResolvedSamplingConfig;
  stopSequences: number[][];
}

/** Generates a seed for a request that gives none: 64 random bits. */
function randomSeed(): bigint {
  return randomBytes(8).readBigUInt64LE(0);
}

type Handler = (event: NativeRequestEvent, iteration: number) => void;

/** Engine.dispose()'s hook into its executor (not exported from the package). */
export const RETIRE = Symbol('retire');

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
  #finalStats: ExecutorStats | undefined;

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
    const checked = this.#checked(request);
    if (checked.resolved.beamWidth === 1 && checked.resolved.numReturnSequences > 1) {
      throw new SamplingConfigError(
        'numReturnSequences',
        'numReturnSequences > 1 without beam search runs one request per sample: use generate(), or enqueue each sample',
      );
    }
    if (checked.tokenMask) throw new Error('a request with a tokenMask runs through stream() or generate(), which feed it its masks');
    return this.#enqueueChecked(checked, onEvent);
  }

  /**
   * As `enqueue`, for a request with a `tokenMask` too: its first mask is computed before it is queued,
   * and each later one between its steps. A mask that cannot be computed ends the request with finish
   * reason "error". Resolves to the request's id.
   */
  async enqueueAsync(request: ExecutorRequest, onEvent?: (event: ExecutorEvent) => void): Promise<number> {
    const checked = this.#checked(request);
    if (checked.resolved.beamWidth === 1 && checked.resolved.numReturnSequences > 1) {
      checked.tokenMask?.dispose();
      throw new SamplingConfigError('numReturnSequences', 'numReturnSequences > 1 without beam search runs one request per sample: enqueue each sample');
    }
    const source = checked.tokenMask;
    if (!source) return this.#enqueueChecked(checked, onEvent);
    let id: number;
    try {
      id = this.#enqueueChecked({ ...checked, native: { ...checked.native, tokenMask: await source.nextMask([]) } });
    } catch (error) {
      source.dispose();
      throw error;
    }
    const holdBack = new StopHoldBack(checked.stopSequences, checked.resolved.includeStopText);
    this.#handlers.set(
      id,
      this.#feedMasks(id, source, (event, iteration, maskError) => {
        const converted = holdBack.apply(toEvent(event, iteration), event.stopLength ?? 0);
        onEvent?.(maskError ? { ...converted, finishReason: 'error' } : converted);
      }),
    );
    return id;
  }

  /**
   * Wraps a handler of a constrained request: after each event that does not end it, its source gives
   * the next masks (one, or one per beam) and the request takes its next step. Beam events that only
   * carry the beams are not passed on; the source is disposed with the last event.
   */
  #feedMasks(id: number, source: TokenMaskSource, deliver: (event: NativeRequestEvent, iteration: number, maskError?: Error) => void): Handler {
    const generated: number[] = [];
    let maskError: Error | undefined;
    return (event, iteration) => {
      if (event.finishReason === undefined && maskError === undefined) {
        const beams = event.beams?.map((beam) => Array.from(beam));
        if (!beams) generated.push(...event.outputIds);
        (beams ? source.beamMasks(beams) : source.nextMask(generated).then((mask) => [mask])).then(
          (masks) => this.#native.setTokenMasks(id, masks),
          (error: Error) => {
            maskError = error;
            this.cancel(id);
          },
        );
      }
      if (event.finishReason !== undefined) source.dispose();
      if (event.beams && event.finishReason === undefined) return;  // internal to constrained beam search
      deliver(event, iteration, event.finishReason !== undefined ? maskError : undefined);
    };
  }

  #enqueueChecked(checked: CheckedRequest, onEvent?: (event: ExecutorEvent) => void): number {
    if (this.#shutdown) throw new Error(`the executor of ${this.#facts.engineDir} is shut down`);
    const id = this.#native.enqueue(checked.native);
    const holdBack = new StopHoldBack(checked.stopSequences, checked.resolved.includeStopText);
    this.#handlers.set(id, (event, iteration) => onEvent?.(holdBack.apply(toEvent(event, iteration), event.stopLength ?? 0)));
    return id;
  }

  /** Cancels a request; it ends at the next iteration with finish reason "cancelled". Unknown ids are ignored. */
  cancel(requestId: number): void {
    this.#native.cancel(requestId);
  }

  /**
   * Pauses a request (it keeps its KV blocks and takes no step) or resumes it. A server pauses the
   * request of a client that stopped reading, so that its output does not pile up in memory. Unknown or
   * finished ids are ignored.
   */
  setPaused(requestId: number, paused: boolean): void {
    this.#native.setPaused(requestId, paused);
  }

  /**
   * Queues a request and yields its events as they come. Aborting `signal`, or leaving the loop early,
   * cancels it. A request that fails ends the iteration with its error.
   */
  async *stream(request: ExecutorRequest, options: ExecutorStreamOptions = {}): AsyncGenerator<ExecutorEvent, void, undefined> {
    yield* this.#stream(this.#checked(request), options.signal, true);
  }

  async *#stream(checked: CheckedRequest, signal: AbortSignal | undefined, single: boolean): AsyncGenerator<ExecutorEvent, void, undefined> {
    if (single && checked.resolved.beamWidth === 1 && checked.resolved.numReturnSequences > 1) {
      throw new SamplingConfigError('numReturnSequences', 'numReturnSequences > 1 without beam search runs one request per sample: use generate()');
    }
    if (signal?.aborted) {
      // Aborted before the call: the same outcome as during it, without queueing anything.
      if (this.#shutdown) throw new Error(`the executor of ${this.#facts.engineDir} is shut down`);
      yield cancelledBeforeStart(checked);
      return;
    }
    const queue: [NativeRequestEvent, number][] = [];
    let wake: (() => void) | undefined;
    const holdBack = new StopHoldBack(checked.stopSequences, checked.resolved.includeStopText);
    const source = checked.tokenMask;
    let maskError: Error | undefined;
    let id: number;
    try {
      if (source) checked = { ...checked, native: { ...checked.native, tokenMask: await source.nextMask([]) } };
      id = this.#enqueueChecked(checked);
    } catch (error) {
      source?.dispose();
      throw error;
    }
    // Replace the handler enqueue installed: this one buffers raw events for the loop below, and gives a
    // constrained request the mask of its next token (it takes no step until then).
    const buffer = (event: NativeRequestEvent, iteration: number, error?: Error): void => {
      if (error) maskError = error;
      queue.push([event, iteration]);
      wake?.();
    };
    this.#handlers.set(id, source ? this.#feedMasks(id, source, buffer) : buffer);
    const onAbort = (): void => this.cancel(id);
    signal?.addEventListener('abort', onAbort, { once: true });
    let finished = false;
    try {
      for (;;) {
        while (queue.length === 0) await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
        const [event, iteration] = queue.shift() as [NativeRequestEvent, number];
        if (event.finishReason !== undefined && maskError !== undefined) {
          finished = true;
          throw new Error(`request ${id} failed: its token mask could not be computed: ${maskError.message}`);
        }
        if (event.finishReason === 'error') {
          finished = true;
          throw new Error(`request ${id} failed: ${event.error ?? 'unknown error'} (engine ${this.#facts.engineDir})`);
        }
        const converted = holdBack.apply(toEvent(event, iteration), event.stopLength ?? 0);
        if (event.finishReason !== undefined) finished = true;
        yield converted;
        if (finished) return;
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      if (!finished) this.cancel(id);  // the consumer left early
      source?.dispose();
    }
  }

  /** Runs one request to its end and gathers its events. */
  async generate(request: ExecutorRequest, options: ExecutorStreamOptions = {}): Promise<ExecutorResult> {
    const checked = this.#checked(request);
    const { beamWidth, numReturnSequences } = checked.resolved;
    if (checked.tokenMask && beamWidth === 1 && numReturnSequences > 1) {
      checked.tokenMask.dispose();
      throw new SamplingConfigError('numReturnSequences', 'independent samples (numReturnSequences > 1 without beam search) cannot share one tokenMask: run one request per sample');
    }
    if (beamWidth > 1 || numReturnSequences === 1) return this.#collect(this.#stream(checked, options.signal, false), request);
    // Independent samples: one request each, same seed, Philox stream i (their prompts share KV blocks
    // through the prefix cache). Each sample's score is the sum of its tokens' log-probabilities.
    const wantLogprobs = checked.native.logprobs !== undefined && checked.native.logprobs > 0;
    const samples = await Promise.all(
      Array.from({ length: numReturnSequences }, (_, index) =>
        this.#collect(
          this.#stream({ ...checked, native: { ...checked.native, sequenceIndex: index, logprobs: Math.max(checked.native.logprobs ?? 0, 1) } }, options.signal, false),
          request,
        ),
      ),
    );
    const sequences = samples.map((sample) => ({
      outputIds: sample.outputIds,
      finishReason: sample.finishReason,
      score: (sample.logprobs ?? []).reduce((sum, entry) => sum + entry.logprob, 0),
      logprobs: wantLogprobs || request.logprobs !== undefined ? trimTop(sample.logprobs, checked.resolved.logprobs) : undefined,
    }));
    const first = samples[0];
    return { ...first, logprobs: sequences[0].logprobs, sequences };
  }

  async #collect(events: AsyncIterable<ExecutorEvent>, request: ExecutorRequest): Promise<ExecutorResult> {
    const outputIds: number[] = [];
    const generationLogits: Float32Array[] = [];
    const logprobs: ExecutorTokenLogprobs[] = [];
    let contextLogits: Float32Array | undefined;
    for await (const event of events) {
      outputIds.push(...event.outputIds);
      if (event.contextLogits) contextLogits = event.contextLogits;
      if (event.generationLogits) generationLogits.push(event.generationLogits);
      if (event.logprobs) logprobs.push(...event.logprobs);
      if (event.finishReason !== undefined) {
        return {
          outputIds,
          finishReason: event.finishReason as ExecutorResult['finishReason'],
          contextLogits: request.returnContextLogits ? (contextLogits ?? new Float32Array(0)) : undefined,
          generationLogits: request.returnGenerationLogits ? concat(generationLogits) : undefined,
          logprobs: event.logprobs || logprobs.length > 0 ? logprobs : undefined,
          sequences: event.sequences,
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
    // After Engine.dispose(): the state once its cancelled requests had ended and freed their KV blocks.
    if (this.#finalStats) return this.#finalStats;
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

  /** Called by Engine.dispose() once the native executor stopped, before its memory is freed. */
  [RETIRE](finalStats: ExecutorStats): void {
    this.#shutdown = true;
    this.#finalStats = finalStats;
  }

  #checked(request: ExecutorRequest): CheckedRequest {
    return checkExecutorRequest(request, this.#facts);
  }
}

/**
 * Checks a prompt against an engine: at least one token, shorter than maxSeqLen (room for one generated
 * token), every id in the vocabulary. Returns it as an Int32Array.
 */
export function checkPromptIds(
  ids: readonly number[] | Int32Array,
  facts: Pick<ExecutorEngineFacts, 'maxSeqLen' | 'vocabSize' | 'engineDir'>,
): Int32Array {
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
  return ids instanceof Int32Array ? ids : Int32Array.from(ids);
}

/**
 * Checks a request before it reaches native code: the prompt, maxTokens, and every sampling option
 * through validateSamplingConfig with the engine's limits (vocabulary size, maxBeamWidth); a bad
 * option throws a SamplingConfigError naming it, and nothing is queued. Also used by Engine.generate
 * (not exported from the package).
 */
export function checkExecutorRequest(request: ExecutorRequest, facts: ExecutorEngineFacts): CheckedRequest {
  if (typeof request !== 'object' || request === null) throw new Error('the request must be an object');
  const { inputIds: ids, maxTokens: rawMaxTokens, returnContextLogits, returnGenerationLogits, tokenMask, ...sampling } = request;
  const maxTokens = validateMaxTokens(rawMaxTokens);
  const endId = resolveEndId(request, facts.defaultEndId, facts.vocabSize);
  const resolved = validateSamplingConfig(stripUndefined(sampling), { vocabSize: facts.vocabSize, maxBeamWidth: facts.maxBeamWidth });
  const promptIds = checkPromptIds(ids, facts);
  const tokenSequences = (option: 'stopWords' | 'badWords'): Int32Array[] =>
    resolved[option].map((sequence, index) => {
      if (typeof sequence === 'string') {
        throw new SamplingConfigError(
          `${option}[${index}]`,
          `${option}[${index}] is text, and the executor has no tokenizer: give token ids, or use LLM.generate, which tokenizes it`,
        );
      }
      return Int32Array.from(sequence);
    });
  const stopTokenSequences = tokenSequences('stopWords');
  const badWords = tokenSequences('badWords');
  const bias = [...resolved.embeddingBias.entries()];
  const native: NativeExecutorRequest = {
    inputIds: promptIds,
    maxTokens: Math.min(maxTokens, facts.maxSeqLen - promptIds.length),
    endId,
    returnContextLogits: returnContextLogits === true,
    returnGenerationLogits: returnGenerationLogits === true,
    seed: resolved.seed ?? randomSeed(),
    temperature: resolved.temperature,
    topK: resolved.topK,
    topP: resolved.topP,
    minP: resolved.minP,
    repetitionPenalty: resolved.repetitionPenalty,
    presencePenalty: resolved.presencePenalty,
    frequencyPenalty: resolved.frequencyPenalty,
    noRepeatNgramSize: resolved.noRepeatNgramSize,
    minTokens: resolved.minTokens,
    badWords: badWords.length > 0 ? badWords : undefined,
    stopTokenSequences: stopTokenSequences.length > 0 ? stopTokenSequences : undefined,
    biasIds: bias.length > 0 ? Int32Array.from(bias.map(([id]) => id)) : undefined,
    biasValues: bias.length > 0 ? Float32Array.from(bias.map(([, value]) => value)) : undefined,
    // `logprobs: 0` asks for the chosen token's only; the native sampler fills it with any N > 0.
    logprobs: request.logprobs === undefined ? undefined : Math.max(resolved.logprobs, 1),
    beamWidth: resolved.beamWidth,
    numReturnSequences: resolved.beamWidth > 1 ? resolved.numReturnSequences : 1,
    lengthPenalty: resolved.lengthPenalty,
    earlyStopping: resolved.earlyStopping,
  };
  if (tokenMask !== undefined && (typeof tokenMask !== 'object' || tokenMask === null || typeof tokenMask.nextMask !== 'function')) {
    throw new Error('tokenMask must be a TokenMaskSource (from @kiln/chat)');
  }
  return { native, resolved, stopSequences: stopTokenSequences.map((sequence) => Array.from(sequence)), tokenMask };
}

/** Options given as `undefined` count as not given (callers spread optional fields). */
function stripUndefined(config: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(config).filter(([, value]) => value !== undefined));
}

function trimTop(logprobs: ExecutorTokenLogprobs[] | undefined, count: number): ExecutorTokenLogprobs[] | undefined {
  return logprobs?.map((entry) => ({ logprob: entry.logprob, top: entry.top.slice(0, count) }));
}

/**
 * Token-id stop sequences in a stream: output ids that could be the start of a stop sequence are held
 * back until they are known not to be, so that with includeStopText false the stop ids are never
 * emitted (the native executor reports how many trailing ids matched in `stopLength`).
 */
class StopHoldBack {
  #held: number[] = [];
  #heldLogprobs: ExecutorTokenLogprobs[] = [];

  constructor(
    private readonly stops: readonly (readonly number[])[],
    private readonly includeStopText: boolean,
  ) {}

  apply(event: ExecutorEvent, stopLength: number): ExecutorEvent {
    if (this.stops.length === 0 || event.sequences) return event;
    const ids = [...this.#held, ...event.outputIds];
    const logprobs = event.logprobs ? [...this.#heldLogprobs, ...event.logprobs] : undefined;
    let emit = ids.length;
    if (event.finishReason === 'stop' && stopLength > 0) {
      if (!this.includeStopText) emit = Math.max(0, ids.length - stopLength);
    } else if (event.finishReason === undefined) {
      emit = ids.length - this.#partial(ids);
    }
    this.#held = ids.slice(emit);
    this.#heldLogprobs = logprobs ? logprobs.slice(emit) : [];
    return { ...event, outputIds: ids.slice(0, emit), logprobs: logprobs?.slice(0, emit) };
  }

  // The longest suffix of `ids` that is a proper prefix of a stop sequence.
  #partial(ids: readonly number[]): number {
    let longest = 0;
    for (const stop of this.stops) {
      for (let n = Math.min(stop.length - 1, ids.length); n > longest; n--) {
        let match = true;
        for (let j = 0; j < n && match; j++) match = ids[ids.length - n + j] === stop[j];
        if (match) {
          longest = n;
          break;
        }
      }
    }
    return longest;
  }
}

/**
 * The native executor says "stop" for both its end id and a stop token sequence; `stopLength` (the
 * matched sequence's length) tells them apart.
 */
function finishReasonOf(reason: NativeExecutorFinishReason | undefined, stopLength: number | undefined): ExecutorFinishReason | undefined {
  if (reason !== 'stop') return reason;
  return stopLength !== undefined && stopLength > 0 ? 'stop' : 'eos';
}

/** The one event of a request whose signal was aborted before the call: nothing queued, nothing generated. */
function cancelledBeforeStart(checked: CheckedRequest): ExecutorEvent {
  return {
    requestId: 0,
    iteration: 0,
    outputIds: [],
    finishReason: 'cancelled',
    stats: {
      queueTimeMs: 0,
      timeToFirstTokenMs: 0,
      timePerOutputTokenMs: 0,
      totalTimeMs: 0,
      numPromptTokens: checked.native.inputIds.length,
      numOutputTokens: 0,
      reusedBlocks: 0,
      preemptions: 0,
    },
  };
}

function toEvent(event: NativeRequestEvent, iteration: number): ExecutorEvent {
  return {
    requestId: event.id,
    iteration,
    outputIds: Array.from(event.outputIds),
    finishReason: finishReasonOf(event.finishReason, event.stopLength),
    contextLogits: event.contextLogits,
    generationLogits: event.generationLogits,
    logprobs: event.logprobs,
    sequences: event.sequences?.map((sequence) => ({
      outputIds: Array.from(sequence.outputIds),
      // A beam ends by its end id or by the length: native "stop" is the end id here.
      finishReason: sequence.finishReason === 'stop' ? ('eos' as const) : sequence.finishReason,
      score: sequence.score,
    })),
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
