import { SamplingConfigError } from './errors';

/**
 * How the next token is chosen and when generation stops. Decoding is greedy for now; temperature,
 * top-k, top-p and the penalties will join this type, each documented the same way.
 */
export interface SamplingConfig {
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
}

/** Human-readable rendering of a rejected value: strings quoted, everything else as JSON would show it. */
function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null || value === undefined) {
    return String(value);
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
