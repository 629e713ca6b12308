// Each reference control on hand-computed cases.
import {
  applyBadWords, applyEmbeddingBias, applyMinP, applyMinTokens, applyNoRepeatNgram, applyPresenceFrequencyPenalty,
  applyRepetitionPenalty, applyTopK, applyTopP, matchStopTokens, referenceDistribution, referenceLogprobs,
  referenceProcessLogits, referenceStopText, softmax, StopTextMatcher,
} from '@kiln/sampling';

const f = (values: number[]) => Float64Array.from(values);

describe('penalties', () => {
  it('repetition penalty divides positive and multiplies negative logits, once per distinct token', () => {
    const s = f([2, -2, 1, 4]);
    applyRepetitionPenalty(s, [0, 1, 0, 0], 2);
    expect(Array.from(s)).toEqual([1, -4, 1, 4]);
  });

  it('presence subtracts once per distinct generated token, frequency once per occurrence', () => {
    const s = f([0, 0, 0, 0]);
    applyPresenceFrequencyPenalty(s, [1, 1, 1, 3], 0.5, 0.25);
    expect(Array.from(s)).toEqual([0, -(0.5 + 0.75), 0, -(0.5 + 0.25)]);
  });

  it('presence and frequency ignore the prompt; repetition penalty does not', () => {
    const logits = [1, 1, 1, 1];
    const withPrompt = referenceProcessLogits(logits, { prompt: [0, 2], generated: [2] }, { presencePenalty: 1, frequencyPenalty: 1 });
    expect(Array.from(withPrompt)).toEqual([1, 1, -1, 1]);
    const repetition = referenceProcessLogits(logits, { prompt: [0], generated: [2] }, { repetitionPenalty: 2 });
    expect(Array.from(repetition)).toEqual([0.5, 1, 0.5, 1]);
  });
});

describe('masks', () => {
  it('embedding bias adds per token', () => {
    const s = f([1, 1, 1]);
    applyEmbeddingBias(s, new Map([[0, 2], [2, -Infinity]]));
    expect(Array.from(s)).toEqual([3, 1, -Infinity]);
  });

  it('embedding bias comes before the repetition penalty (transformers order)', () => {
    // 1 + 1 = 2, then / 2 = 1 (the other order would give 1.5).
    expect(referenceProcessLogits([1, 0], [0], { embeddingBias: { 0: 1 }, repetitionPenalty: 2 })[0]).toBe(1);
  });

  it('bad words ban a token when the sequence ends with the rest of the word', () => {
    const s = f([0, 0, 0, 0, 0]);
    applyBadWords(s, [4, 1, 2], [[3], [1, 2, 0], [2, 1], [4, 2, 4]]);
    expect(Array.from(s)).toEqual([-Infinity, -Infinity, 0, -Infinity, 0]);
  });

  it('min tokens bans the end id until enough tokens were generated', () => {
    const s = f([0, 0]);
    applyMinTokens(s, 2, 3, 1);
    expect(s[1]).toBe(-Infinity);
    const t = f([0, 0]);
    applyMinTokens(t, 3, 3, 1);
    expect(t[1]).toBe(0);
    const noEnd = f([0, 0]);
    applyMinTokens(noEnd, 0, 3, -1);
    expect(Array.from(noEnd)).toEqual([0, 0]);
    const probs = referenceDistribution([0, 0, 0], { prompt: [2], generated: [0] }, { temperature: 1, minTokens: 2, endId: 1 });
    expect(probs[1]).toBe(0);
    expect(referenceDistribution([0, 0, 0], [2], { temperature: 1, minTokens: 2, endId: 1, ignoreEos: true })[1]).toBeCloseTo(1 / 3);
  });

  it('no-repeat-ngram bans what followed the last n - 1 tokens before', () => {
    const s = f([0, 0, 0, 0, 0]);
    applyNoRepeatNgram(s, [1, 2, 3, 1, 2, 4, 1], 3); // last 2: (4, 1); no earlier (4, 1)
    expect(Array.from(s)).toEqual([0, 0, 0, 0, 0]);
    applyNoRepeatNgram(s, [1, 2, 3, 1, 2, 4, 1, 2], 3); // last 2: (1, 2) followed by 3 and 4
    expect(Array.from(s)).toEqual([0, 0, 0, -Infinity, -Infinity]);
  });

  it('top-k keeps ties with the k-th', () => {
    const s = f([1, 3, 2, 2, 0]);
    applyTopK(s, 2);
    expect(Array.from(s)).toEqual([-Infinity, 3, 2, 2, -Infinity]);
  });

  it('top-p keeps the smallest set reaching topP and always the top token', () => {
    const s = f([Math.log(0.5), Math.log(0.3), Math.log(0.2)]);
    applyTopP(s, 0.6);
    expect(s[2]).toBe(-Infinity);
    expect(s[1]).toBeGreaterThan(-Infinity);
    const one = f([5, 0, 0]);
    applyTopP(one, 0.01);
    expect(Array.from(one)).toEqual([5, -Infinity, -Infinity]);
  });

  it('min-p drops tokens below minP times the top probability', () => {
    const s = f([Math.log(0.6), Math.log(0.3), Math.log(0.1)]);
    applyMinP(s, 0.2); // threshold 0.12
    expect(Array.from(softmax(s)).map((p) => +p.toFixed(6))).toEqual([0.666667, 0.333333, 0]);
  });
});

describe('greedy and logprobs', () => {
  it('temperature 0 is one-hot at the first maximum after the penalties', () => {
    expect(Array.from(referenceDistribution([1, 3, 3], [], {}))).toEqual([0, 1, 0]);
    expect(Array.from(referenceDistribution([1, 3, 2], [1], { repetitionPenalty: 2 }))).toEqual([0, 0, 1]);
  });

  it('logprobs: chosen and top-N, lowest id first on ties', () => {
    const scores = [Math.log(0.25), Math.log(0.5), Math.log(0.25), -Infinity];
    const result = referenceLogprobs(scores, 2, 3);
    expect(result.logprob).toBeCloseTo(Math.log(0.25), 12);
    expect(result.top.map((t) => t.token)).toEqual([1, 0, 2]);
    expect(result.top[0].logprob).toBeCloseTo(Math.log(0.5), 12);
    expect(referenceLogprobs(scores, 3, 4).top[3].logprob).toBe(-Infinity);
  });
});

describe('stop words', () => {
  it('match across token boundaries and exclude the stop text by default', () => {
    expect(referenceStopText(['Hello wo', 'rld. ST', 'OP here'], ['STOP'])).toEqual({ text: 'Hello world. ', stop: 'STOP' });
    expect(referenceStopText(['Hello wo', 'rld. ST', 'OP here'], ['STOP'], true)).toEqual({ text: 'Hello world. STOP', stop: 'STOP' });
  });

  it('hold back only what could still become a stop string', () => {
    const matcher = new StopTextMatcher(['</s>', 'END']);
    expect(matcher.push('abc<')).toEqual({ text: 'abc' });
    expect(matcher.push('/')).toEqual({ text: '' });
    expect(matcher.push('x E')).toEqual({ text: '</x ' });
    expect(matcher.push('N')).toEqual({ text: '' });
    expect(matcher.flush()).toBe('EN');
  });

  it('picks the earliest stop in the text', () => {
    expect(referenceStopText(['a END b </s>'], ['</s>', 'END'])).toEqual({ text: 'a ', stop: 'END' });
    expect(referenceStopText(['no stop here'], ['</s>'])).toEqual({ text: 'no stop here' });
  });

  it('token-id stop sequences match the end of the output', () => {
    expect(matchStopTokens([1, 2, 3, 4], [[9], [3, 4]])).toEqual([3, 4]);
    expect(matchStopTokens([1, 2, 3, 4], [[2, 3]])).toBeUndefined();
    expect(matchStopTokens([4], [[3, 4]])).toBeUndefined();
  });
});
