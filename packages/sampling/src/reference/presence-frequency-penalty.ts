/**
 * OpenAI's presence and frequency penalties over the generated tokens only (not the prompt):
 * logit -= presence * [count > 0] + frequency * count. transformers has no such processor; this mirrors
 * vLLM's apply_penalties, which also applies them right after the repetition penalty.
 */
export function applyPresenceFrequencyPenalty(
  scores: Float64Array,
  generated: readonly number[],
  presence: number,
  frequency: number,
): void {
  if (presence === 0 && frequency === 0) return;
  const counts = new Map<number, number>();
  for (const id of generated) counts.set(id, (counts.get(id) ?? 0) + 1);
  for (const [id, count] of counts) scores[id] -= presence + frequency * count;
}
