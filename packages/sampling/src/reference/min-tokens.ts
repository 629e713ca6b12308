/**
 * Mirrors transformers' MinNewTokensLengthLogitsProcessor: the end id is banned until `minTokens`
 * tokens have been generated. `endId` < 0 (none, or `ignoreEos`) turns it off.
 */
export function applyMinTokens(scores: Float64Array, numGenerated: number, minTokens: number, endId: number): void {
  if (endId >= 0 && numGenerated < minTokens) scores[endId] = -Infinity;
}
