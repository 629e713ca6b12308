import { describe, type SamplingConfig, type SamplingLimits, type TokenSequence, validateTokenId } from './config';
import { SamplingConfigError } from './errors';

/** A `SamplingConfig` with every default filled in and every value checked. */
export interface ResolvedSamplingConfig {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repetitionPenalty: number;
  presencePenalty: number;
  frequencyPenalty: number;
  noRepeatNgramSize: number;
  /** undefined: the runtime picks a random seed for the request. */
  seed: bigint | undefined;
  minTokens: number;
  /** undefined: the model's end id (see `resolveEndId`). */
  endId: number | undefined;
  ignoreEos: boolean;
  stopWords: TokenSequence[];
  includeStopText: boolean;
  badWords: TokenSequence[];
  /** Sparse: token id -> bias, only the non-zero entries. */
  embeddingBias: Map<number, number>;
  beamWidth: number;
  lengthPenalty: number;
  earlyStopping: boolean;
  numReturnSequences: number;
  logprobs: number;
}

// Bounds on list options. A request is untrusted input: these keep one request from making every
// decoding step of the batch scan thousands of sequences.
export const MAX_STOP_WORDS = 64;
export const MAX_BAD_WORDS = 1024;
export const MAX_SEQUENCE_TOKENS = 256;
export const MAX_STOP_TEXT = 1024;
export const MAX_LOGPROBS = 20;
/**
 * The native sampler computes in float32: a number is accepted only if it stays finite as a float32
 * (1e308 would become Infinity there), so that every value this validation accepts runs.
 */
export const MAX_FLOAT32 = 3.4028234663852886e38;
/** Counts the native sampler keeps in 32-bit integers (topK, minTokens, noRepeatNgramSize). */
export const MAX_INT32 = 2147483647;
const MAX_UINT64 = (1n << 64n) - 1n;

const KNOWN_OPTIONS: ReadonlySet<string> = new Set<keyof SamplingConfig>([
  'temperature', 'topK', 'topP', 'minP', 'repetitionPenalty', 'presencePenalty', 'frequencyPenalty',
  'noRepeatNgramSize', 'seed', 'minTokens', 'endId', 'ignoreEos', 'stopWords', 'includeStopText', 'badWords',
  'embeddingBias', 'beamWidth', 'lengthPenalty', 'earlyStopping', 'numReturnSequences', 'logprobs',
]);

function fail(option: string, message: string): never {
  throw new SamplingConfigError(option, `${option} ${message}`);
}

function finite(option: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value)) fail(option, `must be a finite number, got ${describe(value)}`);
  if (!Number.isFinite(Math.fround(value))) fail(option, `must be within the float32 range (magnitude at most ${MAX_FLOAT32}), got ${describe(value)}`);
  return value;
}

/** A value that must stay above zero once rounded to float32 (1e-320 rounds to 0). */
function positive32(option: string, value: number, range: string): void {
  if (!(Math.fround(value) > 0)) fail(option, `must be ${range} and at least the smallest float32 above zero (1.4e-45), got ${value}`);
}

function integer(option: string, value: unknown, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined) return fallback;
  if (typeof value === 'number' && Number.isSafeInteger(value) && value > max && max === MAX_INT32) {
    fail(option, `must be an integer at most ${MAX_INT32} (the native sampler keeps it in 32 bits), got ${describe(value)}`);
  }
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER || max === MAX_INT32 ? `>= ${min}` : `in [${min}, ${max}]`;
    fail(option, `must be an integer ${range}, got ${describe(value)}`);
  }
  return value;
}

function boolean(option: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') fail(option, `must be a boolean, got ${describe(value)}`);
  return value;
}

function seedOf(value: unknown): bigint | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) return BigInt(value);
  if (typeof value === 'bigint' && value >= 0n && value <= MAX_UINT64) return value;
  return fail('seed', `must be an integer in [0, 2^64 - 1] (a number up to 2^53 - 1, or a bigint), got ${describe(value)}`);
}

function sequences(option: string, value: unknown, maxCount: number, vocabSize: number | undefined): TokenSequence[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) fail(option, `must be an array of strings or token-id arrays, got ${describe(value)}`);
  if (value.length > maxCount) fail(option, `has ${value.length} sequences, more than the ${maxCount} allowed`);
  return value.map((item: unknown, i) => {
    const at = `${option}[${i}]`;
    if (typeof item === 'string') {
      if (item.length === 0 || item.length > MAX_STOP_TEXT) fail(at, `must be 1 to ${MAX_STOP_TEXT} characters long, got ${item.length}`);
      return item;
    }
    if (!Array.isArray(item)) fail(at, `must be a string or an array of token ids, got ${describe(item)}`);
    if (item.length === 0 || item.length > MAX_SEQUENCE_TOKENS) {
      fail(at, `must hold 1 to ${MAX_SEQUENCE_TOKENS} token ids, got ${item.length}`);
    }
    item.forEach((id: unknown, j) => validateTokenId(`${at}[${j}]`, id, vocabSize));
    return [...(item as number[])];
  });
}

function embeddingBiasOf(value: unknown, vocabSize: number | undefined): Map<number, number> {
  const bias = new Map<number, number>();
  if (value === undefined) return bias;
  const put = (id: number, b: unknown) => {
    if (typeof b !== 'number' || Number.isNaN(b) || b === Number.POSITIVE_INFINITY) {
      fail(`embeddingBias[${id}]`, `must be a finite number or -Infinity, got ${describe(b)}`);
    }
    if (b !== Number.NEGATIVE_INFINITY && !Number.isFinite(Math.fround(b))) {
      fail(`embeddingBias[${id}]`, `must be within the float32 range (magnitude at most ${MAX_FLOAT32}) or -Infinity, got ${describe(b)}`);
    }
    if (b !== 0) bias.set(id, b);
  };
  if (Array.isArray(value) || value instanceof Float32Array) {
    if (vocabSize !== undefined && value.length > vocabSize) {
      fail('embeddingBias', `has ${value.length} entries, more than the vocabulary size ${vocabSize}`);
    }
    for (let id = 0; id < value.length; id++) put(id, value[id]);
    return bias;
  }
  if (typeof value !== 'object' || value === null) {
    fail('embeddingBias', `must be a map from token id to bias or an array, got ${describe(value)}`);
  }
  for (const [key, b] of Object.entries(value)) {
    if (!/^(0|[1-9][0-9]*)$/.test(key)) fail('embeddingBias', `keys must be token ids, got ${JSON.stringify(key)}`);
    put(validateTokenId('embeddingBias', Number(key), vocabSize), b);
  }
  return bias;
}

/**
 * Checks every option of `config` and fills in the defaults. Throws a `SamplingConfigError` naming the
 * first option at fault (unknown options included, so that `top_k` is not silently ignored). `limits`
 * holds the engine's limits, for the runtime to reject a request before it is queued.
 */
export function validateSamplingConfig(config: unknown, limits: SamplingLimits = {}): ResolvedSamplingConfig {
  if (config === undefined) config = {};
  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    throw new SamplingConfigError('samplingConfig', `samplingConfig must be an object, got ${describe(config)}`);
  }
  for (const key of Object.keys(config)) {
    if (!KNOWN_OPTIONS.has(key)) throw new SamplingConfigError(key, `${key} is not a sampling option`);
  }
  const c = config as Record<keyof SamplingConfig, unknown>;
  const { vocabSize, maxBeamWidth } = limits;

  const temperature = finite('temperature', c.temperature, 0);
  if (temperature < 0) fail('temperature', `must be >= 0 (0 is greedy), got ${temperature}`);
  const topP = finite('topP', c.topP, 1);
  if (!(topP > 0 && topP <= 1)) fail('topP', `must be in (0, 1] (1 is off), got ${topP}`);
  positive32('topP', topP, 'in (0, 1]');
  const minP = finite('minP', c.minP, 0);
  if (!(minP >= 0 && minP <= 1)) fail('minP', `must be in [0, 1] (0 is off), got ${minP}`);
  const repetitionPenalty = finite('repetitionPenalty', c.repetitionPenalty, 1);
  if (!(repetitionPenalty > 0)) fail('repetitionPenalty', `must be > 0 (1 is off), got ${repetitionPenalty}`);
  positive32('repetitionPenalty', repetitionPenalty, '> 0');

  const beamWidth = integer('beamWidth', c.beamWidth, 1, 1);
  if (maxBeamWidth !== undefined && beamWidth > maxBeamWidth) {
    fail('beamWidth', `${beamWidth} is above the engine's maximum beam width ${maxBeamWidth}`);
  }
  const numReturnSequences = integer('numReturnSequences', c.numReturnSequences, 1, 1);
  if (beamWidth > 1 && numReturnSequences > beamWidth) {
    fail('numReturnSequences', `${numReturnSequences} is above beamWidth ${beamWidth}: beam search returns at most beamWidth sequences`);
  }

  const endId = c.endId === undefined ? undefined : validateTokenId('endId', c.endId, vocabSize);

  return {
    temperature,
    topK: integer('topK', c.topK, 0, 0, MAX_INT32),
    topP,
    minP,
    repetitionPenalty,
    presencePenalty: finite('presencePenalty', c.presencePenalty, 0),
    frequencyPenalty: finite('frequencyPenalty', c.frequencyPenalty, 0),
    noRepeatNgramSize: integer('noRepeatNgramSize', c.noRepeatNgramSize, 0, 0, MAX_INT32),
    seed: seedOf(c.seed),
    minTokens: integer('minTokens', c.minTokens, 0, 0, MAX_INT32),
    endId,
    ignoreEos: boolean('ignoreEos', c.ignoreEos, false),
    stopWords: sequences('stopWords', c.stopWords, MAX_STOP_WORDS, vocabSize),
    includeStopText: boolean('includeStopText', c.includeStopText, false),
    badWords: sequences('badWords', c.badWords, MAX_BAD_WORDS, vocabSize),
    embeddingBias: embeddingBiasOf(c.embeddingBias, vocabSize),
    beamWidth,
    lengthPenalty: finite('lengthPenalty', c.lengthPenalty, 1),
    earlyStopping: boolean('earlyStopping', c.earlyStopping, false),
    numReturnSequences,
    logprobs: integer('logprobs', c.logprobs, 0, 0, MAX_LOGPROBS),
  };
}
