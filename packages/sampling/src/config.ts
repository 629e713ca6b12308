import { SamplingConfigError } from './errors';

/**
 * A sequence of tokens given either as text (tokenized by the runtime with the model's tokenizer, without
 * special tokens) or as token ids.
 */
export type TokenSequence = string | readonly number[];

/**
 * How the next token is chosen and when generation stops. Every control defaults to "off", which together
 * give greedy decoding; each is applied in the order transformers' `generate()` applies the processor it
 * mirrors (see `reference/distribution.ts`).
 */
export interface SamplingConfig {
  /**
   * Divides the logits before top-k/top-p/min-p and sampling (transformers' TemperatureLogitsWarper).
   * Default 0. Range: >= 0. 0 means greedy decoding: the highest-scoring token after the penalties,
   * first index on ties, and topK/topP/minP/seed have no effect. 1 leaves the logits as they are.
   */
  temperature?: number;
  /**
   * Keep only the `topK` highest-scoring tokens (ties with the k-th kept), as transformers'
   * TopKLogitsWarper. Default 0. Range: integer >= 0. 0 turns it off.
   */
  topK?: number;
  /**
   * Nucleus sampling: keep the smallest set of most probable tokens whose probabilities sum to at least
   * `topP`, as transformers' TopPLogitsWarper. Default 1. Range: (0, 1]. 1 turns it off.
   */
  topP?: number;
  /**
   * Drop tokens whose probability is below `minP` times the most probable token's, as transformers'
   * MinPLogitsWarper. Default 0. Range: [0, 1]. 0 turns it off.
   */
  minP?: number;
  /**
   * Penalizes every token that occurs in the prompt or the output: positive logits are divided by it,
   * negative ones multiplied, as transformers' RepetitionPenaltyLogitsProcessor. Default 1. Range: > 0
   * (below 1 encourages repetition). 1 turns it off.
   */
  repetitionPenalty?: number;
  /**
   * OpenAI's presence penalty: subtracted once from the logit of every distinct token generated so far
   * (the prompt does not count). Default 0. Range: any finite number (OpenAI uses [-2, 2]); negative
   * values encourage repetition. 0 turns it off.
   */
  presencePenalty?: number;
  /**
   * OpenAI's frequency penalty: subtracted from a token's logit once per time it was generated so far
   * (the prompt does not count). Default 0. Range: any finite number (OpenAI uses [-2, 2]). 0 turns it off.
   */
  frequencyPenalty?: number;
  /**
   * Never produce an n-gram of this size that already occurs in the prompt or output, as transformers'
   * NoRepeatNGramLogitsProcessor. Default 0. Range: integer >= 0. 0 turns it off.
   */
  noRepeatNgramSize?: number;
  /**
   * Seed of the request's random number generator: the same seed, prompt and config give the same
   * tokens, whatever else runs in the same batch. Default: a random seed per request. Range: integer in
   * [0, 2^64 - 1], as a number (up to 2^53 - 1) or a bigint. Ignored when `temperature` is 0.
   */
  seed?: number | bigint;
  /**
   * The end id cannot be generated before this many tokens, as transformers'
   * MinNewTokensLengthLogitsProcessor. Default 0. Range: integer >= 0. 0 turns it off.
   */
  minTokens?: number;
  /**
   * Token that ends generation; it is returned as the last output token, with finish reason "stop".
   * Default: the model's first end-of-sequence id (its generation config's `eos_token_id`).
   * Range: 0 to vocabSize - 1. Turn off with `ignoreEos: true`.
   */
  endId?: number;
  /**
   * Keep generating past the end id, until `maxTokens`. Default false. Set true for benchmarks and
   * for comparing against references that were generated without stopping.
   */
  ignoreEos?: boolean;
  /**
   * Generation stops when the output ends with one of these: a string is matched on the decoded text
   * (across token boundaries), a token-id array on the output ids. Default: none. Range: at most 64
   * sequences, none empty. Turn off with an empty array or undefined.
   */
  stopWords?: readonly TokenSequence[];
  /**
   * Return the matched stop text (or stop tokens) as part of the output. Default false: the output ends
   * just before the stop sequence, as OpenAI's `stop` does.
   */
  includeStopText?: boolean;
  /**
   * Sequences that may never be generated: a sequence's last token is banned whenever the sequence so far
   * ends with the rest of it, as transformers' NoBadWordsLogitsProcessor. Strings are tokenized.
   * Default: none. Range: at most 1024 sequences, none empty, ids in the vocabulary. Turn off with an
   * empty array or undefined.
   */
  badWords?: readonly TokenSequence[];
  /**
   * Added to the logits before anything else, as transformers' SequenceBiasLogitsProcessor with
   * single-token sequences (OpenAI's `logit_bias`): either a map from token id to bias or a dense array
   * indexed by token id (at most vocabSize long). Default: none. Range: finite numbers; -Infinity bans
   * a token. Turn off with undefined or an empty map.
   */
  embeddingBias?: Readonly<Record<number, number>> | readonly number[] | Float32Array;
  /**
   * Number of beams: 1 samples (or decodes greedily) a single sequence; more runs beam search, as
   * transformers' `num_beams`. Default 1. Range: integer in [1, the engine's maximum beam width].
   */
  beamWidth?: number;
  /**
   * Beam search: a finished beam's score is its summed log-probability divided by
   * `length ** lengthPenalty`, as transformers' BeamHypotheses. Default 1. Range: any finite number;
   * > 0 favors longer sequences, < 0 shorter ones. 0 turns length normalization off.
   */
  lengthPenalty?: number;
  /**
   * Beam search: stop as soon as `beamWidth` finished candidates exist (true), or only when no running
   * beam can beat them (false), as transformers' `early_stopping`. Default false. Ignored without beams.
   */
  earlyStopping?: boolean;
  /**
   * Sequences returned per request: the best `numReturnSequences` beams with beam search, independent
   * samples otherwise. Default 1. Range: integer >= 1, at most `beamWidth` with beam search.
   */
  numReturnSequences?: number;
  /**
   * Return the log-probability of each generated token and of the `logprobs` most likely alternatives
   * at its step, computed from the distribution the token was drawn from (after every control).
   * Default 0. Range: integer in [0, 20]. 0 returns none.
   */
  logprobs?: number;
}

/** Limits of the engine that will run a request, checked by `validateSamplingConfig` when given. */
export interface SamplingLimits {
  /** The engine's largest beam width; a larger `beamWidth` is rejected before the request is queued. */
  maxBeamWidth?: number;
  /** The model's vocabulary size; token ids (endId, badWords, stopWords, embeddingBias) must be below it. */
  vocabSize?: number;
}

/** Human-readable rendering of a rejected value: strings quoted, everything else as JSON would show it. */
export function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint' || value === null || value === undefined) {
    return typeof value === 'bigint' ? `${value}n` : String(value);
  }
  return `a ${Array.isArray(value) ? 'array' : typeof value}`;
}

/**
 * Checks `maxTokens`, the number of tokens to generate at most: a positive integer. There is no default
 * and no way to turn it off: every request must bound its own length.
 */
export function validateMaxTokens(maxTokens: unknown): number {
  if (typeof maxTokens !== 'number' || !Number.isSafeInteger(maxTokens) || maxTokens < 1) {
    throw new SamplingConfigError('maxTokens', `maxTokens must be a positive integer, got ${describe(maxTokens)}`);
  }
  return maxTokens;
}

/**
 * Checks a token id option (`endId`): an integer in [0, vocabSize). `vocabSize` is checked only when
 * given, for callers that validate before an engine is loaded.
 */
export function validateTokenId(option: string, value: unknown, vocabSize?: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new SamplingConfigError(option, `${option} must be a non-negative integer token id, got ${describe(value)}`);
  }
  if (vocabSize !== undefined && value >= vocabSize) {
    throw new SamplingConfigError(option, `${option} ${value} is outside the vocabulary (size ${vocabSize})`);
  }
  return value;
}

/**
 * Resolves the end id a request runs with: none (-1) with `ignoreEos`, else the explicit `endId`, else
 * `defaultEndId` (the model's end-of-sequence id; -1 or undefined when it has none).
 */
export function resolveEndId(config: SamplingConfig, defaultEndId: number | undefined, vocabSize?: number): number {
  if (config.ignoreEos !== undefined && typeof config.ignoreEos !== 'boolean') {
    throw new SamplingConfigError('ignoreEos', `ignoreEos must be a boolean, got ${describe(config.ignoreEos)}`);
  }
  if (config.endId !== undefined) validateTokenId('endId', config.endId, vocabSize);
  if (config.ignoreEos) return -1;
  if (config.endId !== undefined) return config.endId;
  return defaultEndId ?? -1;
}
