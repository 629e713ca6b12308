/**
 * Constrained decoding's allowed-token mask (xgrammar's bitmask layout, the one TensorRT-LLM's and vLLM's
 * guided decoding apply): bit `i & 31` of word `i >> 5` set means token i may be chosen. Every other
 * score becomes -Infinity. It comes first, before every other control, so that no sampling mode (greedy,
 * the warpers, beam search) ever sees a token the grammar forbids.
 */
export function applyTokenMask(scores: Float64Array, allowed: Uint32Array): void {
  if (allowed.length !== tokenMaskWords(scores.length)) {
    throw new RangeError(`a token mask over ${scores.length} tokens has ${tokenMaskWords(scores.length)} words, not ${allowed.length}`);
  }
  for (let i = 0; i < scores.length; i++) {
    if (((allowed[i >>> 5] >>> (i & 31)) & 1) === 0) scores[i] = -Infinity;
  }
}

/** Words of a token mask over `vocabSize` tokens. */
export function tokenMaskWords(vocabSize: number): number {
  return Math.ceil(vocabSize / 32);
}

/** A mask that allows exactly `tokens`. */
export function tokenMaskOf(vocabSize: number, tokens: Iterable<number>): Uint32Array {
  const mask = new Uint32Array(tokenMaskWords(vocabSize));
  for (const token of tokens) {
    if (!Number.isInteger(token) || token < 0 || token >= vocabSize) throw new RangeError(`token ${token} is outside the vocabulary`);
    mask[token >>> 5] |= 1 << (token & 31);
  }
  return mask;
}
