export { SamplingConfigError } from './errors';
export { resolveEndId, validateMaxTokens, validateTokenId } from './config';
export type { SamplingConfig, SamplingLimits, TokenSequence } from './config';
export { MAX_BAD_WORDS, MAX_FLOAT32, MAX_INT32, MAX_LOGPROBS, MAX_SEQUENCE_TOKENS, MAX_STOP_TEXT, MAX_STOP_WORDS, validateSamplingConfig } from './validate';
export type { ResolvedSamplingConfig } from './validate';
export * from './reference/index';
