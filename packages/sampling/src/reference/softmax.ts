// Softmax and log-softmax over one row of scores, in float64. -Infinity entries (masked tokens) get
// probability 0 and log-probability -Infinity.

/** exp(x - max) / sum: the probabilities of a row of scores. */
export function softmax(scores: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < scores.length; i++) if (scores[i] > max) max = scores[i];
  const out = new Float64Array(scores.length);
  let sum = 0;
  for (let i = 0; i < scores.length; i++) {
    out[i] = Math.exp(scores[i] - max);
    sum += out[i];
  }
  for (let i = 0; i < out.length; i++) out[i] /= sum;
  return out;
}

/** x - max - log(sum(exp(x - max))): the log-probabilities of a row of scores. */
export function logSoftmax(scores: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < scores.length; i++) if (scores[i] > max) max = scores[i];
  let sum = 0;
  for (let i = 0; i < scores.length; i++) sum += Math.exp(scores[i] - max);
  const logSum = max + Math.log(sum);
  const out = new Float64Array(scores.length);
  for (let i = 0; i < scores.length; i++) out[i] = scores[i] - logSum;
  return out;
}

/** Index of the largest score, the first one on ties (torch.argmax's choice, and greedy decoding's). */
export function argmax(scores: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < scores.length; i++) if (scores[i] > scores[best]) best = i;
  return best;
}
