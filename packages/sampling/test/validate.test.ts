import { SamplingConfigError, validateSamplingConfig } from '@kiln/sampling';

function rejects(config: unknown, option: string, message: RegExp, limits = {}): void {
  try {
    validateSamplingConfig(config, limits);
  } catch (error) {
    expect(error).toBeInstanceOf(SamplingConfigError);
    expect((error as SamplingConfigError).option).toBe(option);
    expect((error as Error).message).toMatch(message);
    expect((error as Error).message.startsWith(option)).toBe(true);
    return;
  }
  throw new Error(`${JSON.stringify(config)} was accepted`);
}

describe('validateSamplingConfig', () => {
  it('fills in the defaults: greedy, everything off', () => {
    expect(validateSamplingConfig({})).toEqual({
      temperature: 0, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, presencePenalty: 0, frequencyPenalty: 0,
      noRepeatNgramSize: 0, seed: undefined, minTokens: 0, endId: undefined, ignoreEos: false, stopWords: [],
      includeStopText: false, badWords: [], embeddingBias: new Map(), beamWidth: 1, lengthPenalty: 1,
      earlyStopping: false, numReturnSequences: 1, logprobs: 0,
    });
    expect(validateSamplingConfig(undefined).temperature).toBe(0);
  });

  it('keeps valid values', () => {
    const c = validateSamplingConfig({
      temperature: 0.7, topK: 40, topP: 0.9, minP: 0.05, repetitionPenalty: 1.1, presencePenalty: -0.5,
      frequencyPenalty: 0.5, noRepeatNgramSize: 3, seed: 2n ** 64n - 1n, minTokens: 4, endId: 2, stopWords: ['\n\n', [5, 6]],
      badWords: ['damn', [9]], embeddingBias: { 3: 1.5, 4: -Infinity, 5: 0 }, beamWidth: 4, lengthPenalty: 0.8,
      earlyStopping: true, numReturnSequences: 2, logprobs: 20,
    }, { maxBeamWidth: 4, vocabSize: 100 });
    expect(c.seed).toBe(2n ** 64n - 1n);
    expect(c.embeddingBias).toEqual(new Map([[3, 1.5], [4, -Infinity]]));
    expect(c.stopWords).toEqual(['\n\n', [5, 6]]);
    expect(validateSamplingConfig({ seed: 12 }).seed).toBe(12n);
    expect(validateSamplingConfig({ embeddingBias: [0, 2, 0, -1] }).embeddingBias).toEqual(new Map([[1, 2], [3, -1]]));
    expect(validateSamplingConfig({ numReturnSequences: 5 }).numReturnSequences).toBe(5); // independent samples
  });

  it.each<[unknown, string, RegExp, object?]>([
    [{ temperature: -0.1 }, 'temperature', /must be >= 0 \(0 is greedy\), got -0.1/],
    [{ temperature: Number.NaN }, 'temperature', /finite number/],
    [{ topP: 0 }, 'topP', /must be in \(0, 1\]/],
    [{ topP: 1.01 }, 'topP', /must be in \(0, 1\]/],
    [{ topK: -1 }, 'topK', /must be an integer >= 0, got -1/],
    [{ topK: 2.5 }, 'topK', /integer/],
    [{ minP: 1.5 }, 'minP', /\[0, 1\]/],
    [{ repetitionPenalty: 0 }, 'repetitionPenalty', /> 0/],
    [{ presencePenalty: Infinity }, 'presencePenalty', /finite/],
    [{ frequencyPenalty: '1' }, 'frequencyPenalty', /finite number, got "1"/],
    [{ noRepeatNgramSize: -2 }, 'noRepeatNgramSize', />= 0/],
    [{ seed: -1 }, 'seed', /\[0, 2\^64 - 1\]/],
    [{ seed: 2 ** 60 }, 'seed', /bigint/],
    [{ seed: 2n ** 64n }, 'seed', /got 18446744073709551616n/],
    [{ minTokens: -1 }, 'minTokens', />= 0/],
    [{ endId: 100 }, 'endId', /outside the vocabulary \(size 100\)/, { vocabSize: 100 }],
    [{ ignoreEos: 1 }, 'ignoreEos', /boolean/],
    [{ stopWords: 'stop' }, 'stopWords', /array/],
    [{ stopWords: [''] }, 'stopWords[0]', /1 to 1024 characters/],
    [{ stopWords: [[1, 200]] }, 'stopWords[0][1]', /outside the vocabulary/, { vocabSize: 100 }],
    [{ badWords: [[]] }, 'badWords[0]', /1 to 256 token ids/],
    [{ badWords: [[-1]] }, 'badWords[0][0]', /non-negative integer token id/],
    [{ embeddingBias: { x: 1 } }, 'embeddingBias', /keys must be token ids/],
    [{ embeddingBias: { 1: Infinity } }, 'embeddingBias[1]', /finite number or -Infinity/],
    [{ embeddingBias: { 100: 1 } }, 'embeddingBias', /outside the vocabulary/, { vocabSize: 100 }],
    [{ embeddingBias: new Array(101).fill(0) }, 'embeddingBias', /more than the vocabulary size 100/, { vocabSize: 100 }],
    [{ beamWidth: 0 }, 'beamWidth', />= 1/],
    [{ beamWidth: 8 }, 'beamWidth', /8 is above the engine's maximum beam width 4/, { maxBeamWidth: 4 }],
    [{ beamWidth: 2, numReturnSequences: 3 }, 'numReturnSequences', /3 is above beamWidth 2/],
    [{ lengthPenalty: Number.NaN }, 'lengthPenalty', /finite/],
    [{ earlyStopping: 'never' }, 'earlyStopping', /boolean/],
    [{ logprobs: 21 }, 'logprobs', /\[0, 20\]/],
    [{ top_k: 5 }, 'top_k', /is not a sampling option/],
    [[], 'samplingConfig', /must be an object/],
    // A rest parameter: a function with more parameters than a row has would get Jest's `done` callback.
])('rejects %p naming %s', (...[config, option, message, limits]) => rejects(config, option, message, limits));

  it('caps the number of stop and bad words', () => {
    rejects({ stopWords: new Array(65).fill('x') }, 'stopWords', /65 sequences, more than the 64 allowed/);
    rejects({ badWords: new Array(1025).fill([1]) }, 'badWords', /more than the 1024 allowed/);
  });
});
