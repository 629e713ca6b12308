import type { SamplingConfig } from '../config';
import { validateSamplingConfig } from '../validate';
import { applyBadWords } from './bad-words';
import { applyEmbeddingBias } from './embedding-bias';
import { applyMinP } from './min-p';
import { applyMinTokens } from './min-tokens';
import { applyNoRepeatNgram } from './no-repeat-ngram';
import { applyPresenceFrequencyPenalty } from './presence-frequency-penalty';
import { applyRepetitionPenalty } from './repetition-penalty';
import { argmax, logSoftmax, softmax } from './softmax';
import { applyTemperature } from './temperature';
import { applyTopK } from './top-k';
import { applyTopP } from './top-p';
import { applyTokenMask } from './token-mask';

/**
 * The tokens a step is conditioned on: an array is a prompt with nothing generated yet; otherwise the
 * prompt and the tokens generated so far (the presence/frequency penalties and minTokens count only these).
 */
export type TokenContext = readonly number[] | { prompt: readonly number[]; generated: readonly number[] };

/**
 * The order of the controls, transformers' generate() order (GenerationMixin._get_logits_processor:
 * sequence bias, repetition penalty, no-repeat-ngram, bad words, min new tokens, then the warpers
 * temperature, top-k, top-p, min-p). The presence/frequency penalties, which transformers lacks, come
 * right after the repetition penalty as in vLLM. A constrained request's token mask (a grammar's) comes
 * first of all. The native samplers apply the same order.
 */
export const PROCESSOR_ORDER = [
  'tokenMask',
  'embeddingBias',
  'repetitionPenalty',
  'presenceFrequencyPenalty',
  'noRepeatNgramSize',
  'badWords',
  'minTokens',
  'temperature',
  'topK',
  'topP',
  'minP',
] as const;

function split(context: TokenContext): { all: number[]; generated: readonly number[] } {
  if (Array.isArray(context)) return { all: [...(context as readonly number[])], generated: [] };
  const { prompt, generated } = context as { prompt: readonly number[]; generated: readonly number[] };
  return { all: [...prompt, ...generated], generated };
}

/**
 * Applies every control of `config` to a copy of `logits`, in PROCESSOR_ORDER, and returns the processed
 * scores in float64 (-Infinity where masked). With temperature 0 (greedy) the warpers are skipped.
 * String stop/bad words must have been tokenized by the caller: only token-id bad words apply here.
 * `allowed`: a constrained step's token mask (applyTokenMask); default: every token.
 */
export function referenceProcessLogits(
  logits: ArrayLike<number>,
  context: TokenContext,
  config: SamplingConfig,
  allowed?: Uint32Array,
): Float64Array {
  const c = validateSamplingConfig(config, { vocabSize: logits.length });
  const { all, generated } = split(context);
  for (const id of all) {
    if (!Number.isInteger(id) || id < 0 || id >= logits.length) throw new RangeError(`context token ${id} is outside the vocabulary`);
  }
  const scores = Float64Array.from(logits as ArrayLike<number>);
  if (allowed !== undefined) applyTokenMask(scores, allowed);
  applyEmbeddingBias(scores, c.embeddingBias);
  applyRepetitionPenalty(scores, all, c.repetitionPenalty);
  applyPresenceFrequencyPenalty(scores, generated, c.presencePenalty, c.frequencyPenalty);
  applyNoRepeatNgram(scores, all, c.noRepeatNgramSize);
  applyBadWords(scores, all, c.badWords.filter((w): w is number[] => typeof w !== 'string'));
  applyMinTokens(scores, generated.length, c.minTokens, c.ignoreEos ? -1 : (c.endId ?? -1));
  if (c.temperature === 0) return scores;
  applyTemperature(scores, c.temperature);
  applyTopK(scores, c.topK);
  applyTopP(scores, c.topP);
  applyMinP(scores, c.minP);
  return scores;
}

/**
 * The probabilities the next token is drawn from: softmax of the processed scores (0 where masked), or,
 * with temperature 0, 1 at the greedy token (the first highest score) and 0 elsewhere.
 */
export function referenceDistribution(
  logits: ArrayLike<number>,
  context: TokenContext,
  config: SamplingConfig,
  allowed?: Uint32Array,
): Float64Array {
  const scores = referenceProcessLogits(logits, context, config, allowed);
  if ((config.temperature ?? 0) !== 0) return softmax(scores);
  const oneHot = new Float64Array(scores.length);
  oneHot[argmax(scores)] = 1;
  return oneHot;
}

/** Log-probability of the chosen token and of the most likely tokens, as returned with `logprobs`. */
export interface TokenLogprobs {
  token: number;
  logprob: number;
  /** The `logprobs` most likely tokens, most likely first (lowest id first on ties). */
  top: Array<{ token: number; logprob: number }>;
}

/**
 * Logprobs of a step: log-softmax of the processed scores (the distribution the token was drawn from;
 * for greedy decoding the scores after the penalties, before any warper), the chosen token's entry and
 * the `count` best.
 */
export function referenceLogprobs(processedScores: ArrayLike<number>, token: number, count: number): TokenLogprobs {
  const logprobs = logSoftmax(processedScores);
  const order = Array.from(logprobs.keys()).sort((a, b) => logprobs[b] - logprobs[a] || a - b);
  return {
    token,
    logprob: logprobs[token],
    top: order.slice(0, count).map((id) => ({ token: id, logprob: logprobs[id] })),
  };
}
