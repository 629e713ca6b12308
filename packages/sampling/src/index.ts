export { SamplingConfigError } from './errors';
export { resolveEndId, validateMaxTokens, validateTokenId } from './config';
export type { SamplingConfig } from './config';
