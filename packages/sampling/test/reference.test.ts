import { PROCESSOR_ORDER, referenceDistribution } from '@kiln/sampling';
import { configOf, fixture } from './fixture';

describe('referenceDistribution against transformers', () => {
  it('applies the processors in the fixture order', () => {
    const names: Record<string, string> = {
      repetition_penalty: 'repetitionPenalty',
      no_repeat_ngram_size: 'noRepeatNgramSize',
      temperature: 'temperature',
      top_k: 'topK',
      top_p: 'topP',
      min_p: 'minP',
    };
    const ours = PROCESSOR_ORDER.filter((name) => Object.values(names).includes(name));
    expect(ours).toEqual(fixture.order.map((name) => names[name]));
  });

  it.each(fixture.cases.map((c, i) => [i, c] as const))('case %i matches within 1e-5', (_, c) => {
    const probs = referenceDistribution(c.logits, c.context_ids, configOf(c.params));
    expect(probs).toHaveLength(c.probs.length);
    for (let i = 0; i < probs.length; i++) {
      if (Math.abs(probs[i] - c.probs[i]) > 1e-5) throw new Error(`token ${i}: ${probs[i]} vs ${c.probs[i]}`);
      // Masked stays masked exactly.
      if (c.probs[i] === 0) expect(probs[i]).toBe(0);
    }
  });
});
