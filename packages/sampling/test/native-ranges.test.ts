// Every value validateSamplingConfig accepts must run in the native sampler, which computes in float32
// and keeps counts in 32-bit integers (issue 16, finding 4: 1e308 became Infinity there and failed as an
// internal error). Values past those ranges are refused here, naming the option.
import { MAX_FLOAT32, MAX_INT32, SamplingConfigError, validateSamplingConfig } from '@kiln/sampling';

function refusal(config: object): SamplingConfigError {
  try {
    validateSamplingConfig(config);
  } catch (error) {
    expect(error).toBeInstanceOf(SamplingConfigError);
    return error as SamplingConfigError;
  }
  throw new Error(`${JSON.stringify(config)} was accepted`);
}

describe('native ranges', () => {
  test.each([
    [{ temperature: 1e308 }, 'temperature', /float32 range/],
    [{ presencePenalty: 1e308 }, 'presencePenalty', /float32 range/],
    [{ frequencyPenalty: -1e39 }, 'frequencyPenalty', /float32 range/],
    [{ lengthPenalty: 3.5e38 }, 'lengthPenalty', /float32 range/],
    [{ topP: 1e-320 }, 'topP', /smallest float32 above zero/],
    [{ repetitionPenalty: 1e-300 }, 'repetitionPenalty', /smallest float32 above zero/],
    [{ embeddingBias: { 5: 1e308 } }, 'embeddingBias[5]', /float32 range/],
    [{ topK: MAX_INT32 + 1 }, 'topK', /at most 2147483647/],
    [{ minTokens: 2 ** 40 }, 'minTokens', /at most 2147483647/],
    [{ noRepeatNgramSize: Number.MAX_SAFE_INTEGER }, 'noRepeatNgramSize', /at most 2147483647/],
  ])('%j is refused naming %s', (config, option, message) => {
    const error = refusal(config);
    expect(error.option).toBe(option);
    expect(error.message).toMatch(message);
  });

  test('the edges of the ranges are accepted', () => {
    const c = validateSamplingConfig({
      temperature: MAX_FLOAT32, presencePenalty: -MAX_FLOAT32, topP: 1.5e-45, repetitionPenalty: 1.5e-45,
      topK: MAX_INT32, minTokens: MAX_INT32, embeddingBias: { 1: MAX_FLOAT32, 2: -Infinity },
    });
    expect(c.temperature).toBe(MAX_FLOAT32);
    expect(c.topK).toBe(MAX_INT32);
    expect(c.embeddingBias.get(2)).toBe(-Infinity);
  });
});
