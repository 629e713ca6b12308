import * as path from 'node:path';
import { Engine, type EngineGenerateOptions, type EngineGenerateResult, type EngineInfo, type EngineLoadOptions, type FinishReason } from './engine';
import { SamplingConfigError, StopTextMatcher, validateSamplingConfig, type TokenSequence } from '@kiln/sampling';
import { GuidedDecoding, validateResponseFormat, type CompiledFormat, type ResponseFormat, type TokenMaskSource, type ToolDefinition } from '@kiln/chat';
import type { ExecutorRequest, ExecutorSequence, ExecutorTokenLogprobs, RequestStats } from './executor';
import { resolveModel, type ResolveModelOptions } from './model-cache';
import { Tokenizer } from './tokenizer';

/** LLM.load's options: where the model comes from and how it is built (ResolveModelOptions), and how the engine is loaded. */
export interface LLMLoadOptions extends EngineLoadOptions, ResolveModelOptions {}

export interface LLMGenerateOptions extends Omit<EngineGenerateOptions, 'onToken'> {
  /**
   * Called with each piece of generated text as soon as it is complete (never half a character), in
   * order; the pieces concatenate to `text`. Default: none.
   */
  onText?: (delta: string) => void;
  /** Called with each generated token id, in order. Default: none. */
  onToken?: (tokenId: number) => void;
  /**
   * Cancels the request when aborted, before or during the call alike: `generate` resolves (and a
   * stream ends) with finish reason "cancelled" and the text so far, never an AbortError; the request's
   * KV blocks are free by then. The rule of every entry point: docs/cancellation.md. Default: none.
   */
  signal?: AbortSignal;
  /**
   * Structured output: the text must be a JSON object (`json_object`), JSON valid against a schema
   * (`json_schema`), match a regular expression (`regex`) or an EBNF grammar (`grammar`). Enforced by
   * a token mask at every step (xgrammar), in every sampling mode, beam search included; the output
   * ends with the model's end token once complete, so a `maxTokens` too small cuts it short (finish
   * reason "length"). Needs the model's end token (not with ignoreEos). Default: `{ type: 'text' }`.
   * A bad one throws a ResponseFormatError naming the field (`responseFormat.schema.properties.x...`).
   */
  responseFormat?: ResponseFormat;
  /**
   * Constrained decoding with a grammar of your own: a mask source (CompiledFormat.maskSource(), from
   * compileResponseFormat or compileToolCall), disposed when the request ends. Not with responseFormat.
   * Default: none.
   */
  tokenMask?: TokenMaskSource;
}

/** One returned sequence (numReturnSequences > 1 or beam search) with its text. */
export interface LLMSequence extends ExecutorSequence {
  /** Its text (special tokens left out), ending before a matched stop string unless includeStopText. */
  text: string;
}

export interface LLMGenerateResult extends Omit<EngineGenerateResult, 'finishReason' | 'sequences' | 'stats'> {
  /** "eos", "stop" (a stop string, or stop token ids), "length" or "cancelled". */
  finishReason: FinishReason;
  /** With numReturnSequences > 1 or beam search: every returned sequence, best first for beams; the top-level fields are the first's. */
  sequences?: LLMSequence[];
  /** The generated text (special tokens such as the end token left out); the prompt is not repeated. */
  text: string;
  /**
   * Queue time, time to first token, time per output token, token counts, reused prefix blocks: always
   * set. After a stop string, numOutputTokens counts the tokens up to the one that completed it.
   */
  stats: RequestStats;
}

export type LLMStreamOptions = Omit<LLMGenerateOptions, 'onText' | 'onToken'>;

/** One step of a generation stream: the tokens of one executor iteration and their text. */
export interface LLMStreamChunk {
  tokenIds: number[];
  /** Text completed by these tokens (may be empty while a character is incomplete). */
  text: string;
  /** Set on the last chunk: "eos", "stop", "length" or "cancelled". */
  finishReason?: FinishReason;
  /** Set on the last chunk. */
  stats?: RequestStats;
  contextLogits?: Float32Array;
  generationLogits?: Float32Array;
  /** With `logprobs`: one entry per id of `tokenIds`. */
  logprobs?: ExecutorTokenLogprobs[];
  /** Beam search, on the last chunk: the returned beams, best first (`tokenIds` is the best one's). */
  sequences?: ExecutorSequence[];
}

/** An engine with its tokenizer: text in, text out. Requests run on the engine's executor, batched. */
export class LLM {
  readonly engine: Engine;
  readonly tokenizer: Tokenizer;
  // xgrammar's tokenizer tables, made on the first request with a responseFormat.
  readonly #guided = new Map<number, Promise<GuidedDecoding>>();

  private constructor(engine: Engine, tokenizer: Tokenizer) {
    this.engine = engine;
    this.tokenizer = tokenizer;
  }

  /**
   * Loads a model in one call, from
   * - nothing: the built-in scribe-7m;
   * - an engine folder (`kiln build`'s output);
   * - a Hugging Face model folder (config.json, safetensors weights, tokenizer): converted and built
   *   into the engine cache on first use, with progress through `options.onProgress`; later calls, and
   *   the `kiln` command, reuse that engine;
   * - a Hub id `org/name[@revision]`: downloaded first (resumable, into `$HF_HOME/hub`), then as a folder.
   * A `.gguf` file is refused: GGUF import is not supported yet.
   *
   * `options`: build settings for a folder or Hub id (`build`: target, dtype, maxBatchSize, ...), the
   * cache and Hub options (ResolveModelOptions), and how to load the engine (EngineLoadOptions: threads,
   * KV cache size, executor limits). See `resolveModel` for the cache and its concurrency rules.
   */
  static async load(source?: string, options: LLMLoadOptions = {}): Promise<LLM> {
    const { build, cacheDir, onProgress, token, hubUrl, offline, signal, ...engineOptions } = options;
    const { engineDir } = await resolveModel(source, { build, cacheDir, onProgress, token, hubUrl, offline, signal });
    // The tokenizer first: it is cheap and fails without leaving native memory behind.
    const tokenizer = await Tokenizer.load(engineDir);
    const engine = await Engine.load(engineDir, engineOptions);
    return new LLM(engine, tokenizer);
  }

  /** The engine's `info`: backend, device, activation dtype, weight and KV cache sizes, limits. */
  get info(): EngineInfo {
    return this.engine.info;
  }

  /**
   * Splits a request's stop words and bad words: strings are for this side (stop strings are matched on
   * the decoded text, across token boundaries; bad words are tokenized without special tokens), token
   * ids go to the executor. Throws a SamplingConfigError naming the option at fault.
   */
  #prepare(options: LLMStreamOptions, inputIds: readonly number[]): { request: ExecutorRequest; stopTexts: string[] } {
    const { signal: _signal, stopWords, badWords, responseFormat: _responseFormat, ...rest } = options;
    validateSamplingConfig(Object.fromEntries(Object.entries({ stopWords, badWords }).filter(([, v]) => v !== undefined)), {
      vocabSize: this.engine.vocabSize,
    });
    const stopTexts = (stopWords ?? []).filter((word): word is string => typeof word === 'string');
    const stopIds = (stopWords ?? []).filter((word): word is readonly number[] => typeof word !== 'string');
    const badIds = (badWords ?? []).map((word: TokenSequence, index) => {
      if (typeof word !== 'string') return word;
      const ids = this.tokenizer.encode(word, { addSpecialTokens: false });
      if (ids.length === 0) throw new SamplingConfigError(`badWords[${index}]`, `badWords[${index}] tokenizes to no token`);
      return ids;
    });
    const request: ExecutorRequest = {
      ...rest,
      inputIds,
      stopWords: stopWords === undefined ? undefined : stopIds,
      badWords: badWords === undefined ? undefined : badIds,
    };
    return { request, stopTexts };
  }

  /** The text of a finished sequence, cut at the first stop string (its ids cut after the token that completed it). */
  #finishSequence(ids: readonly number[], stopTexts: string[], includeStopText: boolean): { outputIds: number[]; text: string; stopped: boolean } {
    if (stopTexts.length === 0) return { outputIds: [...ids], text: this.tokenizer.decode(ids, { skipSpecialTokens: true }), stopped: false };
    const decoder = this.tokenizer.createStreamDecoder({ skipSpecialTokens: true });
    const matcher = new StopTextMatcher(stopTexts, includeStopText);
    let text = '';
    for (let i = 0; i < ids.length; i++) {
      let piece = decoder.push(ids[i]) ?? '';
      if (i === ids.length - 1) piece += decoder.flush() ?? '';
      const step = matcher.push(piece);
      text += step.text;
      if (step.stop !== undefined) return { outputIds: ids.slice(0, i + 1), text, stopped: true };
    }
    return { outputIds: [...ids], text: text + matcher.flush(), stopped: false };
  }

  /**
   * Streams a continuation of `prompt` (text, or token ids used as they are): one chunk per executor
   * iteration that produced tokens for it. Leaving the loop early, or aborting `signal`, cancels it.
   * Stop strings end the stream with finish reason "stop", the text ending before the stop string
   * (unless includeStopText); text that could start a stop string is held back until it is decided.
   */
  async *generateStream(prompt: string | readonly number[], options: LLMStreamOptions): AsyncGenerator<LLMStreamChunk, void, undefined> {
    const inputIds = typeof prompt === 'string' ? this.tokenizer.encode(prompt) : prompt;
    if (options.returnContextLogits && !this.engine.gathersContextLogits) {
      throw new Error(
        `returnContextLogits needs an engine built with gatherContextLogits, and ${path.join(this.engine.engineDir, 'config.json')} ` +
          'says buildConfig.gatherContextLogits is not true: rebuild it with `kiln build --gather-context-logits`',
      );
    }
    const { request, stopTexts } = this.#prepare(options, inputIds);
    if (options.tokenMask && options.responseFormat !== undefined && options.responseFormat.type !== 'text') {
      throw new SamplingConfigError('tokenMask', 'tokenMask and responseFormat cannot be combined: give one grammar');
    }
    const compiled = options.responseFormat === undefined ? undefined : await this.compileResponseFormat(options.responseFormat, options);
    if (compiled) request.tokenMask = compiled.maskSource();
    try {
      yield* this.#streamRequest(request, stopTexts, options);
    } finally {
      compiled?.dispose();
    }
  }

  /**
   * Compiles a responseFormat (untrusted: checked first, a ResponseFormatError names the field at fault
   * under the name `field`) into a grammar for this model's tokenizer; undefined for `text`. Each of its
   * `maskSource()`s is a request's `tokenMask`. Dispose it once its requests have ended.
   */
  async compileResponseFormat(
    responseFormat: unknown,
    options: { endId?: number; ignoreEos?: boolean; field?: string } = {},
  ): Promise<CompiledFormat | undefined> {
    const field = options.field ?? 'responseFormat';
    const format = validateResponseFormat(responseFormat, field);
    if (format.type === 'text') return undefined;
    if (options.ignoreEos === true) throw new SamplingConfigError('ignoreEos', 'ignoreEos cannot be combined with a responseFormat: a complete output ends with the end token');
    return (await this.#guidedDecoding(options.endId)).compile(format, field);
  }

  /**
   * The grammar of one call of one of `tools` (checked with @kiln/chat's validateTools), for a request
   * that must call a tool (tool_choice "required" or a named function). Dispose it after its requests.
   */
  async compileToolCall(tools: ToolDefinition[], options: { endId?: number; field?: string } = {}): Promise<CompiledFormat> {
    return (await this.#guidedDecoding(options.endId)).compileToolCall(tools, options.field);
  }

  async #guidedDecoding(endId = this.engine.defaultEndId): Promise<GuidedDecoding> {
    if (endId === undefined) throw new Error('structured output needs the model\'s end token, and this engine has none: give endId');
    // One per end token (usually only the model's), kept until dispose().
    let guided = this.#guided.get(endId);
    if (!guided) {
      guided = GuidedDecoding.create(this.tokenizer.grammarVocabulary(this.engine.vocabSize), this.engine.vocabSize, [endId]);
      this.#guided.set(endId, guided);
    }
    return guided;
  }

  async *#streamRequest(request: ExecutorRequest, stopTexts: string[], options: LLMStreamOptions): AsyncGenerator<LLMStreamChunk, void, undefined> {
    const { signal } = options;
    const matcher = stopTexts.length > 0 ? new StopTextMatcher(stopTexts, options.includeStopText === true) : undefined;
    const decoder = this.tokenizer.createStreamDecoder({ skipSpecialTokens: true });
    let generated = 0;
    // A stop string matched: the chunk that ends the stream, sent once the request has left the
    // executor (so that its stats are known and its KV blocks free).
    let stopped: LLMStreamChunk | undefined;
    for await (const event of this.engine.executor.stream(request, { signal })) {
      if (stopped) {
        if (event.finishReason === undefined) continue;
        yield { ...stopped, stats: event.stats && { ...event.stats, numOutputTokens: generated } };
        return;
      }
      generated += event.outputIds.length;
      let text = '';
      for (const id of event.outputIds) text += decoder.push(id) ?? '';
      if (event.finishReason !== undefined) text += decoder.flush() ?? '';
      let finishReason = event.finishReason === 'error' ? undefined : event.finishReason;
      let stopString = false;
      if (matcher && !event.sequences) {
        const step = matcher.push(text);
        text = step.text;
        if (step.stop !== undefined) {
          finishReason = 'stop';
          stopString = true;
        } else if (finishReason !== undefined) text += matcher.flush();
      }
      const chunk: LLMStreamChunk = {
        tokenIds: event.outputIds,
        text,
        finishReason,
        stats: event.stats,
        contextLogits: event.contextLogits,
        generationLogits: event.generationLogits,
        logprobs: event.logprobs,
        sequences: event.sequences,
      };
      if (stopString && event.finishReason === undefined) {
        // Cancel the request and wait for its last event (one iteration at most).
        stopped = chunk;
        this.engine.executor.cancel(event.requestId);
        continue;
      }
      if (stopString && chunk.stats) chunk.stats = { ...chunk.stats, numOutputTokens: generated };
      yield chunk;
      if (finishReason !== undefined) return;
    }
  }

  /** Generates a continuation of `prompt` (text, or token ids used as they are). */
  async generate(prompt: string | readonly number[], options: LLMGenerateOptions): Promise<LLMGenerateResult> {
    const { onText, onToken, ...streamOptions } = options;
    const includeStopText = options.includeStopText === true;
    if ((options.numReturnSequences ?? 1) > 1 && (options.beamWidth ?? 1) <= 1) {
      // Independent samples: the executor runs one request per sample; stop strings are applied to each.
      const inputIds = typeof prompt === 'string' ? this.tokenizer.encode(prompt) : prompt;
      const { request, stopTexts } = this.#prepare(streamOptions, inputIds);
      if (options.responseFormat !== undefined && options.responseFormat.type !== 'text') {
        throw new SamplingConfigError('numReturnSequences', 'responseFormat with independent samples (numReturnSequences > 1 without beam search) is not supported: run one request per sample');
      }
      const result = await this.engine.executor.generate(request, { signal: options.signal });
      const sequences = (result.sequences ?? []).map((sequence) => {
        const finished = this.#finishSequence(sequence.outputIds, stopTexts, includeStopText);
        return {
          ...sequence,
          outputIds: finished.outputIds,
          text: finished.text,
          finishReason: finished.stopped ? ('stop' as const) : sequence.finishReason,
          logprobs: sequence.logprobs?.slice(0, finished.outputIds.length),
        };
      });
      const first = sequences[0];
      first.outputIds.forEach((id) => onToken?.(id));
      if (first.text) onText?.(first.text);
      return {
        outputIds: first.outputIds,
        finishReason: first.finishReason,
        text: first.text,
        logprobs: first.logprobs,
        sequences,
        contextLogits: result.contextLogits,
        generationLogits: result.generationLogits,
        vocabSize: this.engine.vocabSize,
        stats: result.stats,
      };
    }
    const stopTexts = (options.stopWords ?? []).filter((word): word is string => typeof word === 'string');
    const outputIds: number[] = [];
    const generationLogits: Float32Array[] = [];
    const logprobs: ExecutorTokenLogprobs[] = [];
    let text = '';
    let contextLogits: Float32Array | undefined;
    let callbackError: unknown;
    for await (const chunk of this.generateStream(prompt, streamOptions)) {
      outputIds.push(...chunk.tokenIds);
      text += chunk.text;
      if (chunk.contextLogits) contextLogits = chunk.contextLogits;
      if (chunk.generationLogits) generationLogits.push(chunk.generationLogits);
      if (chunk.logprobs) logprobs.push(...chunk.logprobs);
      // Callbacks that throw do not stop the generation: the first error is reported at the end.
      if (callbackError === undefined) {
        try {
          for (const id of chunk.tokenIds) onToken?.(id);
          if (chunk.text) onText?.(chunk.text);
        } catch (error) {
          callbackError = error ?? new Error('a callback threw');
        }
      }
      if (chunk.finishReason !== undefined) {
        if (callbackError !== undefined) throw callbackError;
        const sequences = chunk.sequences?.map((sequence) => {
          const finished = this.#finishSequence(sequence.outputIds, stopTexts, includeStopText);
          return { ...sequence, outputIds: finished.outputIds, text: finished.text, finishReason: finished.stopped ? ('stop' as const) : sequence.finishReason };
        });
        return {
          outputIds: sequences ? sequences[0].outputIds : outputIds,
          finishReason: sequences ? sequences[0].finishReason : chunk.finishReason,
          contextLogits: options.returnContextLogits ? (contextLogits ?? new Float32Array(0)) : undefined,
          generationLogits: options.returnGenerationLogits ? concat(generationLogits) : undefined,
          logprobs: options.logprobs !== undefined ? logprobs : undefined,
          sequences,
          vocabSize: this.engine.vocabSize,
          // Without stop strings the whole output is decoded at once (as transformers decodes it).
          text: sequences ? sequences[0].text : stopTexts.length > 0 ? text : this.tokenizer.decode(outputIds, { skipSpecialTokens: true }),
          stats: chunk.stats as RequestStats,  // always set on the last chunk
        };
      }
    }
    throw new Error('the generation ended without a finish reason');
  }

  /**
   * Cancels the requests in flight (they end with finish reason "cancelled"), waits until they have
   * freed their KV blocks, then frees the engine (Engine.dispose). Idempotent; never rejects.
   */
  async dispose(): Promise<void> {
    await this.engine.dispose();
    const all = [...this.#guided.values()];
    this.#guided.clear();
    for (const guided of all) (await guided.catch(() => undefined))?.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
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
