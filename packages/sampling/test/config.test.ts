import { resolveEndId, SamplingConfigError, validateMaxTokens, validateTokenId } from '@kiln/sampling';

describe('validateMaxTokens', () => {
  it('accepts positive integers', () => {
    expect(validateMaxTokens(1)).toBe(1);
    expect(validateMaxTokens(4096)).toBe(4096);
  });

  it.each([0, -3, 1.5, Number.NaN, Number.POSITIVE_INFINITY, '8', undefined, null])('rejects %p, naming maxTokens', (value) => {
    expect(() => validateMaxTokens(value)).toThrow(SamplingConfigError);
    expect(() => validateMaxTokens(value)).toThrow(/^maxTokens must be a positive integer, got /);
  });

  it('quotes a string value in the message', () => {
    expect(() => validateMaxTokens('8')).toThrow('maxTokens must be a positive integer, got "8"');
  });
});

describe('validateTokenId', () => {
  it('accepts ids inside the vocabulary', () => {
    expect(validateTokenId('endId', 0, 4096)).toBe(0);
    expect(validateTokenId('endId', 4095, 4096)).toBe(4095);
  });

  it('rejects ids outside the vocabulary, naming the option, the id and the size', () => {
    expect(() => validateTokenId('endId', 4096, 4096)).toThrow('endId 4096 is outside the vocabulary (size 4096)');
    expect(() => validateTokenId('endId', -1)).toThrow(/^endId must be a non-negative integer token id, got -1$/);
  });
});

describe('resolveEndId', () => {
  it('defaults to the model end id', () => {
    expect(resolveEndId({}, 0)).toBe(0);
    expect(resolveEndId({}, undefined)).toBe(-1);
  });

  it('prefers an explicit endId', () => {
    expect(resolveEndId({ endId: 7 }, 0, 10)).toBe(7);
  });

  it('turns the end id off with ignoreEos', () => {
    expect(resolveEndId({ ignoreEos: true }, 0)).toBe(-1);
    expect(resolveEndId({ ignoreEos: true, endId: 3 }, 0)).toBe(-1);
  });

  it('rejects a non-boolean ignoreEos and an out-of-vocabulary endId', () => {
    expect(() => resolveEndId({ ignoreEos: 'yes' as unknown as boolean }, 0)).toThrow('ignoreEos must be a boolean, got "yes"');
    expect(() => resolveEndId({ endId: 10 }, 0, 10)).toThrow('endId 10 is outside the vocabulary (size 10)');
  });
});
