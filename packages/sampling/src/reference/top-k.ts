/**
 * Mirrors transformers' TopKLogitsWarper: scores below the k-th largest become -Infinity (ties with the
 * k-th are kept). k = 0 turns it off; k >= vocab keeps everything.
 */
export function applyTopK(scores: Float64Array, k: number): void {
  if (k <= 0 || k >= scores.length) return;
  const kth = Float64Array.from(scores).sort()[scores.length - k];
  for (let i = 0; i < scores.length; i++) if (scores[i] < kth) scores[i] = -Infinity;
}
