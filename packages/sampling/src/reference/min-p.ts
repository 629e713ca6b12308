import { softmax } from './softmax';

/**
 * Mirrors transformers' MinPLogitsWarper: tokens whose probability is below minP times the top
 * probability become -Infinity (the top token always stays). minP = 0 turns it off.
 */
export function applyMinP(scores: Float64Array, minP: number): void {
  if (minP <= 0) return;
  const probs = softmax(scores);
  let top = 0;
  for (const p of probs) if (p > top) top = p;
  const threshold = minP * top;
  for (let i = 0; i < scores.length; i++) if (probs[i] < threshold) scores[i] = -Infinity;
}
