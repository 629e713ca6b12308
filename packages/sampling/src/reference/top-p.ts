import { softmax } from './softmax';

/**
 * Mirrors transformers' TopPLogitsWarper: sort ascending, drop the tokens whose cumulative probability
 * is <= 1 - topP, always keep the most likely one. topP = 1 turns it off (transformers skips the warper).
 */
export function applyTopP(scores: Float64Array, topP: number): void {
  if (topP >= 1) return;
  const probs = softmax(scores);
  // Ascending by score; ties by descending index, so that of equal scores the lowest index is kept longest.
  const order = Array.from(scores.keys()).sort((a, b) => scores[a] - scores[b] || b - a);
  let cumulative = 0;
  for (let rank = 0; rank < order.length - 1; rank++) {
    cumulative += probs[order[rank]];
    if (cumulative <= 1 - topP) scores[order[rank]] = -Infinity;
  }
}
