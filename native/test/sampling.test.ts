// The native samplers (native/src/kiln/sampling) against @kiln/sampling's TypeScript reference and the
// transformers fixture (fixtures/sampling/logits_processors.json): processed distributions within 1e-5,
// the statistics of the draws, determinism of the counter-based RNG, logprobs and argument errors.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadNative, type NativeTesting } from '@kiln/native';
import type { NativeSamplingParams } from '../lib/testing-types';
import { logSoftmax, referenceDistribution, referenceProcessLogits, tokenMaskOf, type SamplingConfig } from '@kiln/sampling';
import { rng } from './test-utils';

const testing: NativeTesting = loadNative().testing;

interface ProcessorCase {
  params: { repetition_penalty: number; temperature: number; top_k: number; top_p: number; min_p: number; no_repeat_ngram_size: number };
  logits: number[];
  context_ids: number[];
  probs: number[];
}
const fixture: { cases: ProcessorCase[] } = JSON.parse(
  readFileSync(join(__dirname, '../../fixtures/sampling/logits_processors.json'), 'utf8'),
);

/** A SamplingConfig as the native params (token-id bad words, sparse embedding bias). */
function nativeParams(config: SamplingConfig): NativeSamplingParams {
  const bias = config.embeddingBias as Record<number, number> | undefined;
  const biasIds = bias ? Object.keys(bias).map(Number) : [];
  return {
    temperature: config.temperature,
    topK: config.topK,
    topP: config.topP,
    minP: config.minP,
    repetitionPenalty: config.repetitionPenalty,
    presencePenalty: config.presencePenalty,
    frequencyPenalty: config.frequencyPenalty,
    noRepeatNgramSize: config.noRepeatNgramSize,
    minTokens: config.minTokens,
    endId: config.endId,
    badWords: config.badWords?.map((w) => Int32Array.from(w as number[])),
    embeddingBias: bias ? { ids: Int32Array.from(biasIds), values: Float32Array.from(biasIds.map((id) => bias[id])) } : undefined,
    logprobs: config.logprobs,
    seed: config.seed,
  };
}

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < actual.length; i++) {
    if (!(Math.abs(actual[i] - expected[i]) <= tolerance)) throw new Error(`index ${i}: ${actual[i]} vs ${expected[i]}`);
  }
}

describe('Philox4x32-10', () => {
  // Known-answer vectors of Random123 (kat_vectors, philox4x32 10).
  it.each([
    [[0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]],
    [[0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]],
    [[0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0], [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]],
  ])('counter %j key %j', (counter, key, expected) => {
    expect(Array.from(testing.philox4x32(Uint32Array.from(counter), Uint32Array.from(key)))).toEqual(expected);
  });

  it('gives uniforms in [0, 1) that depend on seed, step and sequence index', () => {
    const u = testing.samplingUniform({ seed: 42, step: 7 });
    expect(u).toBeGreaterThanOrEqual(0);
    expect(u).toBeLessThan(1);
    expect(testing.samplingUniform({ seed: 42n, step: 7 })).toBe(u);
    expect(testing.samplingUniform({ seed: 43, step: 7 })).not.toBe(u);
    expect(testing.samplingUniform({ seed: 42, step: 8 })).not.toBe(u);
    expect(testing.samplingUniform({ seed: 42, step: 7, sequenceIndex: 1 })).not.toBe(u);
    expect(testing.samplingUniform({ seed: (1n << 64n) - 1n, step: 0 })).not.toBe(testing.samplingUniform({ seed: (1n << 63n) - 1n, step: 0 }));
  });
});

describe('processLogits against transformers', () => {
  it.each(fixture.cases.map((c, i) => [i, c] as const))('fixture case %i within 1e-5', (_, c) => {
    const params: NativeSamplingParams = {
      repetitionPenalty: c.params.repetition_penalty,
      temperature: c.params.temperature,
      topK: c.params.top_k,
      topP: c.params.top_p,
      minP: c.params.min_p,
      noRepeatNgramSize: c.params.no_repeat_ngram_size,
    };
    const { probs } = testing.processLogits({ logits: Float32Array.from(c.logits), tokens: Int32Array.from(c.context_ids), params });
    expectClose(probs, c.probs, 1e-5);
    c.probs.forEach((p, i) => p === 0 && expect(probs[i]).toBe(0));
  });
});

describe('processLogits against the TS reference', () => {
  const vocab = 50;
  const random = rng(7);
  const logits = Float32Array.from({ length: vocab }, () => 4 * (random() - 0.5));
  const prompt = [3, 4, 5, 3, 9];
  const generated = [7, 7, 12, 3, 7, 30];
  const tokens = Int32Array.from([...prompt, ...generated]);
  const cases: Array<[string, SamplingConfig]> = [
    ['presence and frequency penalties', { temperature: 1, presencePenalty: 0.8, frequencyPenalty: 0.5 }],
    ['negative presence penalty', { temperature: 0.8, presencePenalty: -1.2 }],
    ['embedding bias', { temperature: 1, embeddingBias: { 0: 3, 17: -2.5, 49: 1, 10: -Infinity } }],
    ['bad words', { temperature: 1, badWords: [[11], [3, 7, 21], [30, 22], [9, 9, 23]] }],
    ['min tokens masks the end id', { temperature: 1, minTokens: 10, endId: 5 }],
    ['min tokens reached', { temperature: 1, minTokens: 6, endId: 5 }],
    ['everything at once', {
      temperature: 0.9, topK: 20, topP: 0.8, minP: 0.02, repetitionPenalty: 1.2, presencePenalty: 0.3,
      frequencyPenalty: 0.2, noRepeatNgramSize: 2, badWords: [[40], [7, 8]], embeddingBias: { 2: 1.5 }, minTokens: 8, endId: 1,
    }],
    ['greedy with penalties', { temperature: 0, repetitionPenalty: 1.5, frequencyPenalty: 1 }],
  ];
  it.each(cases)('%s', (_, config) => {
    const native = testing.processLogits({ logits, tokens, numPromptTokens: prompt.length, params: nativeParams(config) });
    const context = { prompt, generated };
    expectClose(native.probs, referenceDistribution(logits, context, config), 1e-5);
    const scores = referenceProcessLogits(logits, context, config);
    const reference = logSoftmax(scores);
    for (let i = 0; i < vocab; i++) {
      if (reference[i] === -Infinity) expect(native.logprobs[i]).toBe(-Infinity);
      else expect(Math.abs(native.logprobs[i] - reference[i])).toBeLessThan(1e-5);
    }
  });

  it('bans a bad word only after its prefix', () => {
    const params = nativeParams({ temperature: 1, badWords: [[1, 2]] });
    expect(testing.processLogits({ logits, tokens: Int32Array.from([0, 1]), params }).probs[2]).toBe(0);
    expect(testing.processLogits({ logits, tokens: Int32Array.from([1, 0]), params }).probs[2]).toBeGreaterThan(0);
  });
});

// ---------------------------------------------------------------------------------------------------
// Chi-square test. P(a, x) by its series for x < a + 1, else Q(a, x) by Lentz's continued fraction
// (Numerical Recipes 6.2); the p-value of a statistic with k degrees of freedom is Q(k / 2, x / 2).
function logGamma(x: number): number {
  // Lanczos approximation (g = 7, n = 9), accurate to ~1e-15 for x > 0.
  const c = [0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
    12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7];
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  x -= 1;
  let a = c[0];
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += c[i] / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

function upperRegularizedGamma(a: number, x: number): number {
  if (x <= 0) return 1;
  const front = Math.exp(-x + a * Math.log(x) - logGamma(a));
  if (x < a + 1) {
    let term = 1 / a;
    let sum = term;
    for (let n = 1; n < 1000 && Math.abs(term) > Math.abs(sum) * 1e-15; n++) sum += term *= x / (a + n);
    return 1 - sum * front;
  }
  const tiny = 1e-300;
  let b = x + 1 - a;
  let c = 1 / tiny;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < 1000; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < tiny) d = tiny;
    c = b + an / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const delta = d * c;
    h *= delta;
    if (Math.abs(delta - 1) < 1e-15) break;
  }
  return front * h;
}

/** p-value of Pearson's chi-square of observed counts against expected probabilities (bins < 5 expected pooled). */
function chiSquarePValue(counts: ArrayLike<number>, probs: ArrayLike<number>, draws: number): { statistic: number; df: number; p: number } {
  let statistic = 0;
  let bins = 0;
  let pooledObserved = 0;
  let pooledExpected = 0;
  for (let i = 0; i < probs.length; i++) {
    const expected = probs[i] * draws;
    if (expected === 0) continue;
    if (expected < 5) {
      pooledObserved += counts[i];
      pooledExpected += expected;
      continue;
    }
    statistic += (counts[i] - expected) ** 2 / expected;
    bins++;
  }
  if (pooledExpected > 0) {
    statistic += (pooledObserved - pooledExpected) ** 2 / pooledExpected;
    bins++;
  }
  const df = bins - 1;
  return { statistic, df, p: upperRegularizedGamma(df / 2, statistic / 2) };
}

describe('chi-square helper', () => {
  it('matches known quantiles', () => {
    // chi2.sf(3.841458820694124, 1) = 0.05; chi2.sf(18.307038053275146, 10) = 0.05; chi2.sf(2, 2) = e^-1.
    expect(upperRegularizedGamma(0.5, 3.841458820694124 / 2)).toBeCloseTo(0.05, 10);
    expect(upperRegularizedGamma(5, 18.307038053275146 / 2)).toBeCloseTo(0.05, 10);
    expect(upperRegularizedGamma(1, 1)).toBeCloseTo(Math.exp(-1), 12);
  });
});

describe('sampling statistics', () => {
  const DRAWS = 20000;
  const logits = Float32Array.from(fixture.cases[0].logits);
  const vocab = logits.length;
  const draw = (config: SamplingConfig, seed: number) => {
    const params = nativeParams({ ...config, seed });
    const rows = Array.from({ length: DRAWS }, (_, step) => ({ step, params }));
    const batch = new Float32Array(DRAWS * vocab);
    for (let r = 0; r < DRAWS; r++) batch.set(logits, r * vocab);
    return testing.sampleRows({ logits: batch, vocab, rows, threads: 2 }).tokens;
  };

  it.each<[string, SamplingConfig]>([
    ['temperature 1', { temperature: 1 }],
    ['temperature 1.7', { temperature: 1.7 }],
    ['top-k 8', { temperature: 1.3, topK: 8 }],
    ['top-p 0.9', { temperature: 1.5, topP: 0.9 }],
    ['min-p 0.05', { temperature: 1.5, minP: 0.05 }],
    ['top-k, top-p and min-p', { temperature: 2, topK: 30, topP: 0.95, minP: 0.02 }],
  ])('%s: no masked token, frequencies pass chi-square at p > 0.001', (_, config) => {
    const expected = referenceDistribution(logits, [], config);
    const tokens = draw(config, 1234);
    const counts = new Float64Array(vocab);
    for (const t of tokens) {
      if (expected[t] === 0) throw new Error(`drew masked token ${t}`);
      counts[t]++;
    }
    const { p, df } = chiSquarePValue(counts, expected, DRAWS);
    expect(df).toBeGreaterThan(0);
    expect(p).toBeGreaterThan(0.001);
  });

  it('the test has power: draws at temperature 1.3 fail against the temperature-1 distribution', () => {
    const tokens = draw({ temperature: 1.3 }, 99);
    const counts = new Float64Array(vocab);
    for (const t of tokens) counts[t]++;
    expect(chiSquarePValue(counts, referenceDistribution(logits, [], { temperature: 1 }), DRAWS).p).toBeLessThan(1e-6);
  });
});

describe('determinism and greedy decoding', () => {
  const random = rng(99);
  const vocab = 32;
  const logits = Float32Array.from({ length: vocab }, () => random() * 2);

  it('same seed and step give the same token, whatever else is in the batch', () => {
    const params = nativeParams({ temperature: 1, seed: 2024n });
    const alone = testing.sampleRows({ logits, vocab, rows: [{ step: 5, params }] }).tokens[0];
    const others = Array.from({ length: 7 }, (_, i) => ({ step: i, params: nativeParams({ temperature: 1.3, topK: 4, seed: i }) }));
    const batch = new Float32Array(8 * vocab);
    for (let r = 0; r < 8; r++) batch.set(logits, r * vocab);
    for (const threads of [1, 2]) {
      const rows = [...others.slice(0, 3), { step: 5, params }, ...others.slice(3)];
      expect(testing.sampleRows({ logits: batch, vocab, rows, threads }).tokens[3]).toBe(alone);
    }
    const again = testing.sampleRows({ logits, vocab, rows: [{ step: 5, params }] }).tokens[0];
    expect(again).toBe(alone);
  });

  it('different steps, seeds or sequence indices explore the distribution', () => {
    const draws = (key: (i: number) => { step: number; seed: number; sequenceIndex?: number }) =>
      new Set(Array.from({ length: 64 }, (_, i) => {
        const { step, seed, sequenceIndex } = key(i);
        return testing.sampleRows({ logits, vocab, rows: [{ step, sequenceIndex, params: nativeParams({ temperature: 5, seed }) }] }).tokens[0];
      })).size;
    expect(draws((i) => ({ step: i, seed: 1 }))).toBeGreaterThan(10);
    expect(draws((i) => ({ step: 0, seed: i }))).toBeGreaterThan(10);
    expect(draws((i) => ({ step: 0, seed: 1, sequenceIndex: i }))).toBeGreaterThan(10);
  });

  it('temperature 0 takes the argmax, the first index on ties, whatever the seed', () => {
    const tied = new Float32Array(vocab).fill(-1);
    tied[9] = 3;
    tied[4] = 3;
    for (const seed of [0, 1, 77]) {
      expect(testing.sampleRows({ logits: tied, vocab, rows: [{ step: seed, params: { temperature: 0, seed } }] }).tokens[0]).toBe(4);
    }
    const penalized = testing.sampleRows({
      logits: tied, vocab, rows: [{ step: 0, tokens: Int32Array.from([4]), params: { temperature: 0, repetitionPenalty: 2 } }],
    });
    expect(penalized.tokens[0]).toBe(9);
  });
});

describe('logprobs', () => {
  const random = rng(5);
  const vocab = 40;
  const logits = Float32Array.from({ length: vocab }, () => 3 * (random() - 0.5));
  logits[6] = logits[21] = 2.5; // a tie: the lower id is listed first

  it.each<[string, SamplingConfig]>([
    ['sampling with top-k', { temperature: 0.7, topK: 12, logprobs: 5, seed: 3 }],
    ['greedy with a penalty', { temperature: 0, frequencyPenalty: 0.5, logprobs: 20 }],
    ['the chosen token only', { temperature: 1, seed: 11 }],
  ])('%s: chosen and top-N match the reference log-softmax', (_, config) => {
    const tokens = Int32Array.from([1, 2, 3, 21]);
    const context = { prompt: [1, 2], generated: [3, 21] };
    const result = testing.sampleRows({ logits, vocab, rows: [{ step: 0, tokens, numPromptTokens: 2, params: nativeParams(config) }] });
    const reference = logSoftmax(referenceProcessLogits(logits, context, config));
    const token = result.tokens[0];
    expect(reference[token]).toBeGreaterThan(-Infinity);
    expect(Math.abs(result.logprobs[0] - reference[token])).toBeLessThan(1e-5);
    const order = Array.from(reference.keys()).sort((a, b) => reference[b] - reference[a] || a - b);
    const n = config.logprobs ?? 0;
    expect(Array.from(result.top[0].ids)).toEqual(order.slice(0, n));
    expectClose(result.top[0].logprobs, order.slice(0, n).map((i) => reference[i]), 1e-5);
  });
});

describe('argument errors name the field', () => {
  const logits = new Float32Array(8);
  it.each<[NativeSamplingParams, RegExp]>([
    [{ topP: 0 }, /topP must be in \(0, 1\]/],
    [{ topP: 1.5 }, /topP/],
    [{ temperature: -1 }, /temperature/],
    [{ minP: 2 }, /minP/],
    [{ repetitionPenalty: 0 }, /repetitionPenalty/],
    [{ topK: -1 }, /topK/],
    [{ endId: 8 }, /endId 8 is outside the vocabulary/],
    [{ badWords: [Int32Array.from([1, 99])] }, /badWords\[0\] holds token 99/],
    [{ embeddingBias: { ids: Int32Array.from([8]), values: Float32Array.from([1]) } }, /embeddingBias token 8/],
    [{ logprobs: 21 }, /logprobs/],
    [{ seed: -1 }, /seed/],
  ])('%j', (params, message) => {
    expect(() => testing.processLogits({ logits, params })).toThrow(message);
  });

  it('rejects a logits size that does not match the rows', () => {
    expect(() => testing.sampleRows({ logits, vocab: 3, rows: [{ step: 0, params: {} }] })).toThrow(/'logits' must hold rows.length \* vocab = 3/);
    expect(() => testing.sampleRows({ logits, vocab: 8, rows: [{ step: 0, tokens: Int32Array.from([9]), params: {} }] })).toThrow(/rows\[0\]\.tokens/);
  });
});

describe('token mask (constrained decoding) against the TS reference', () => {
  const vocab = 70; // not a multiple of 32: the last word is partial
  const random = rng(17);
  const logits = Float32Array.from({ length: vocab }, () => 4 * (random() - 0.5));
  const prompt = [3, 4, 5];
  const generated = [7, 12, 7];
  const tokens = Int32Array.from([...prompt, ...generated]);
  const allowedIds = [1, 2, 5, 7, 12, 31, 32, 33, 40, 64, 69];
  const allowed = tokenMaskOf(vocab, allowedIds);
  const cases: Array<[string, SamplingConfig]> = [
    ['greedy', { temperature: 0 }],
    ['plain sampling', { temperature: 1 }],
    ['top-k smaller than the allowed set', { temperature: 0.8, topK: 3 }],
    ['top-p and min-p', { temperature: 1.3, topP: 0.7, minP: 0.05 }],
    ['penalties, bias and bad words', {
      temperature: 1, repetitionPenalty: 1.3, presencePenalty: 0.5, frequencyPenalty: 0.4, embeddingBias: { 3: 5, 7: -1 },
      badWords: [[12], [7, 40]], minTokens: 5, endId: 1,
    }],
  ];
  it.each(cases)('%s: the same distribution, 0 outside the mask', (_, config) => {
    const native = testing.processLogits({ logits, tokens, numPromptTokens: prompt.length, params: nativeParams(config), allowed });
    const reference = referenceDistribution(logits, { prompt, generated }, config, allowed);
    expectClose(native.probs, reference, 1e-5);
    for (let i = 0; i < vocab; i++) {
      if (!allowedIds.includes(i)) expect(native.probs[i]).toBe(0);
    }
  });

  it('a masked row draws only allowed tokens, the same ones as the reference distribution says', () => {
    const counts = new Map<number, number>();
    const rows = Array.from({ length: 400 }, (_, step) => ({ step, tokens, numPromptTokens: 3, params: nativeParams({ temperature: 2, seed: 9 }), allowed }));
    const batch = new Float32Array(rows.length * vocab);
    for (let r = 0; r < rows.length; r++) batch.set(logits, r * vocab);
    const drawn = testing.sampleRows({ logits: batch, vocab, rows, threads: 2 }).tokens;
    for (const token of drawn) counts.set(token, (counts.get(token) ?? 0) + 1);
    for (const token of counts.keys()) expect(allowedIds).toContain(token);
    const reference = referenceDistribution(logits, { prompt, generated }, { temperature: 2 }, allowed);
    // Every token the reference gives >= 5% shows up in 400 draws (each misses with p < 1e-8).
    for (const id of allowedIds) if (reference[id] >= 0.05) expect(counts.get(id) ?? 0).toBeGreaterThan(0);
  });

  it('greedy picks the best allowed token, not the best token', () => {
    const peaked = Float32Array.from(logits);
    peaked[0] = 100; // the unconstrained argmax, not allowed
    const result = testing.sampleRows({ logits: peaked, vocab, rows: [{ step: 0, params: { temperature: 0 }, allowed }] });
    const reference = referenceProcessLogits(peaked, [], { temperature: 0 }, allowed);
    let best = allowedIds[0];
    for (const id of allowedIds) if (reference[id] > reference[best]) best = id;
    expect(result.tokens[0]).toBe(best);
  });

  it('refuses a mask of the wrong size, naming it', () => {
    expect(() => testing.sampleRows({ logits, vocab, rows: [{ step: 0, params: {}, allowed: new Uint32Array(2) }] })).toThrow(/rows\[0\]\.allowed/);
  });
});
