/**
 * Mirrors transformers' RepetitionPenaltyLogitsProcessor: every distinct token of the sequence so far
 * (prompt and output) has its positive logit divided by `penalty` and its negative logit multiplied by
 * it, once however often it occurs.
 */
export function applyRepetitionPenalty(scores: Float64Array, tokens: readonly number[], penalty: number): void {
  if (penalty === 1) return;
  for (const id of new Set(tokens)) {
    const s = scores[id];
    scores[id] = s < 0 ? s * penalty : s / penalty;
  }
}
