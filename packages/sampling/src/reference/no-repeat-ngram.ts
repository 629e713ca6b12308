/**
 * Mirrors transformers' NoRepeatNGramLogitsProcessor: bans every token that would complete an n-gram
 * already present in the sequence so far (prompt and output), i.e. every token that followed an earlier
 * occurrence of the last n - 1 tokens.
 */
export function applyNoRepeatNgram(scores: Float64Array, tokens: readonly number[], ngramSize: number): void {
  if (ngramSize <= 0) return;
  const length = tokens.length;
  // transformers' _get_ngrams: no n-gram is complete yet, nothing to ban.
  if (length + 1 < ngramSize) return;
  const prefixStart = length - ngramSize + 1;
  for (let start = 0; start + ngramSize <= length; start++) {
    let matches = true;
    for (let j = 0; j < ngramSize - 1 && matches; j++) matches = tokens[start + j] === tokens[prefixStart + j];
    if (matches) scores[tokens[start + ngramSize - 1]] = -Infinity;
  }
}
