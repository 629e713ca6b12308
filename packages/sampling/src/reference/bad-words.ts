/**
 * Mirrors transformers' NoBadWordsLogitsProcessor: a banned sequence's last token gets -Infinity when
 * the sequence so far ends with the rest of it (always, for a single-token sequence).
 */
export function applyBadWords(scores: Float64Array, tokens: readonly number[], badWords: readonly (readonly number[])[]): void {
  for (const word of badWords) {
    const prefix = word.length - 1;
    if (prefix > tokens.length) continue;
    let matches = true;
    for (let j = 0; j < prefix && matches; j++) matches = tokens[tokens.length - prefix + j] === word[j];
    if (matches) scores[word[prefix]] = -Infinity;
  }
}
