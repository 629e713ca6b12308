export { SamplingConfigError } from './errors';
export { resolveEndId, validateMaxTokens, validateTokenId } from './config';
export type { SamplingConfig, SamplingLimits, TokenSequence } from './config';
export { MAX_LOGPROBS, validateSamplingConfig } from './validate';
export type { ResolvedSamplingConfig } from './validate';
export * from './reference/index';
