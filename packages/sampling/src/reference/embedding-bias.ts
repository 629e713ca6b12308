/**
 * Adds a per-token bias. Mirrors transformers' SequenceBiasLogitsProcessor restricted to single-token
 * sequences (what OpenAI calls `logit_bias`), which generate() applies before every other processor.
 */
export function applyEmbeddingBias(scores: Float64Array, bias: ReadonlyMap<number, number>): void {
  for (const [id, b] of bias) scores[id] += b;
}
