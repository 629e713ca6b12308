// The executor's sampling and beam search end to end, on the llama fixture (float32, maxBeamWidth 4)
// and the built-in scribe-7m. Each control is checked against @kiln/sampling's TypeScript reference:
// greedy runs return their generation logits, and the reference processes each raw row to the token
// (and logprobs) the native sampler must have chosen. Beam search is checked against transformers'
// beam_search outputs stored in the fixture's reference.json.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildEngine } from '@kiln/builder';
import { convertCheckpoint } from '@kiln/convert';
import { Engine, LLM, type ExecutorRequest } from '@kiln/runtime';
import { argmax, referenceLogprobs, referenceProcessLogits, SamplingConfigError, type SamplingConfig } from '@kiln/sampling';
import { scribe7mPath } from '@kiln/scribe-7m';

const llamaFixture = path.resolve(__dirname, '..', '..', '..', 'fixtures', 'hf-tiny', 'llama');
const reference = JSON.parse(fs.readFileSync(path.join(llamaFixture, 'reference.json'), 'utf8')) as {
  prompts: { input_ids: number[] }[];
  beam_search: { prompt_index: number; num_beams: number; max_new_tokens: number; length_penalty: number; sequences: number[][]; sequence_scores: number[] };
};
let tmpDir: string;
let llama: Engine;
let scribe: LLM;

beforeAll(async () => {
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-sampling-runtime-'));
  const llamaCheckpoint = path.join(tmpDir, 'llama-checkpoint');
  await convertCheckpoint({ modelDir: llamaFixture, outputDir: llamaCheckpoint, dtype: 'float32' });
  await buildEngine({ checkpointDir: llamaCheckpoint, outputDir: path.join(tmpDir, 'llama'), config: { maxBatchSize: 16, maxSeqLen: 128, maxBeamWidth: 4 } });
  llama = await Engine.load(path.join(tmpDir, 'llama'));
  const scribeCheckpoint = path.join(tmpDir, 'scribe-checkpoint');
  await convertCheckpoint({ modelDir: scribe7mPath, outputDir: scribeCheckpoint });
  await buildEngine({ checkpointDir: scribeCheckpoint, outputDir: path.join(tmpDir, 'scribe'), config: { maxBatchSize: 16, maxSeqLen: 256 } });
  scribe = await LLM.load(path.join(tmpDir, 'scribe'));
}, 300000);

afterAll(async () => {
  await llama?.executor.shutdown();
  llama?.dispose();
  scribe?.dispose();
  fs.rmSync(tmpDir, { recursive: true, force: true });
});

const prompt = (i: number) => reference.prompts[i].input_ids;

/** Runs greedy with generation logits and replays the reference processors on each raw row. */
async function checkAgainstReference(config: SamplingConfig, maxTokens = 12, promptIndex = 0): Promise<number[]> {
  const inputIds = prompt(promptIndex);
  const full: SamplingConfig = config.endId === undefined ? { ignoreEos: true, ...config } : config;
  const result = await llama.executor.generate({ inputIds, maxTokens, returnGenerationLogits: true, logprobs: 3, ...full });
  const vocab = llama.vocabSize;
  const logits = result.generationLogits as Float32Array;
  expect(result.outputIds.length).toBe(maxTokens);
  const tokens = [...inputIds];
  for (let k = 0; k < result.outputIds.length; k++) {
    const row = logits.subarray(k * vocab, (k + 1) * vocab);
    const processed = referenceProcessLogits(row, { prompt: inputIds, generated: tokens.slice(inputIds.length) }, full);
    const chosen = argmax(processed);
    expect(result.outputIds[k]).toBe(chosen);
    const want = referenceLogprobs(processed, chosen, 3);
    const got = (result.logprobs ?? [])[k];
    expect(got.logprob).toBeCloseTo(want.logprob, 4);
    expect(got.top.map((t) => t.token)).toEqual(want.top.map((t) => t.token));
    got.top.forEach((t, j) => expect(t.logprob).toBeCloseTo(want.top[j].logprob, 4));
    tokens.push(chosen);
  }
  return result.outputIds;
}

describe('beam search', () => {
  test("matches transformers' beam_search: 4 beams, sequences in order and scores within 1e-4", async () => {
    const b = reference.beam_search;
    const result = await llama.executor.generate({
      inputIds: prompt(b.prompt_index),
      maxTokens: b.max_new_tokens,
      ignoreEos: true,
      beamWidth: b.num_beams,
      numReturnSequences: b.num_beams,
      lengthPenalty: b.length_penalty,
      earlyStopping: false,
    });
    const sequences = result.sequences ?? [];
    expect(sequences.map((s) => s.outputIds)).toEqual(b.sequences);
    sequences.forEach((s, i) => expect(Math.abs(s.score - b.sequence_scores[i])).toBeLessThan(1e-4));
    expect(result.outputIds).toEqual(b.sequences[0]);
    // Every block went back: the beams' copies and the reserve are released.
    const stats = llama.executor.stats();
    expect(stats.kvBlocksUsed).toBe(0);
  });

  test('beams run batched with other requests and give the same result', async () => {
    const b = reference.beam_search;
    const request: ExecutorRequest = { inputIds: prompt(b.prompt_index), maxTokens: b.max_new_tokens, ignoreEos: true, beamWidth: 4, numReturnSequences: 2 };
    const others = [0, 2].map((i) => llama.executor.generate({ inputIds: prompt(i), maxTokens: 10, ignoreEos: true, temperature: 1, seed: i }));
    const [beams] = await Promise.all([llama.executor.generate(request), ...others]);
    expect(beams.sequences?.map((s) => s.outputIds)).toEqual(b.sequences.slice(0, 2));
  });

  test('early stopping and EOS: finished hypotheses end with the end id', async () => {
    const result = await llama.executor.generate({ inputIds: prompt(0), maxTokens: 16, beamWidth: 3, numReturnSequences: 3, endId: 90, earlyStopping: true });
    const sequences = result.sequences ?? [];
    expect(sequences).toHaveLength(3);
    for (const s of sequences) {
      if (s.finishReason === 'eos') expect(s.outputIds[s.outputIds.length - 1]).toBe(90);
      else expect(s.outputIds).toHaveLength(16);
    }
    for (let i = 1; i < sequences.length; i++) expect(sequences[i - 1].score).toBeGreaterThanOrEqual(sequences[i].score);
  });
});

describe('validation before queueing', () => {
  const cases: [Partial<ExecutorRequest>, string][] = [
    [{ temperature: -1 }, 'temperature'],
    [{ topP: 0 }, 'topP'],
    [{ topP: 1.5 }, 'topP'],
    [{ topK: -1 }, 'topK'],
    [{ beamWidth: 5 }, 'beamWidth'],
    [{ beamWidth: 2, numReturnSequences: 3 }, 'numReturnSequences'],
    [{ embeddingBias: { 999999: 1 } }, 'embeddingBias'],
    [{ logprobs: 21 }, 'logprobs'],
  ];
  test.each(cases)('%j is rejected naming %s', (config, option) => {
    const before = llama.executor.stats().waitingRequests;
    let error: unknown;
    try {
      llama.executor.enqueue({ inputIds: prompt(0), maxTokens: 4, ...config });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(SamplingConfigError);
    expect((error as SamplingConfigError).option).toBe(option);
    expect(llama.executor.stats().waitingRequests).toBe(before);
  });
});

describe('controls against the TypeScript reference', () => {
  test('greedy logprobs', async () => {
    await checkAgainstReference({});
  });
  test('presence and frequency penalties', async () => {
    const plain = await checkAgainstReference({}, 16);
    const penalized = await checkAgainstReference({ presencePenalty: 1.5, frequencyPenalty: 1 }, 16);
    expect(penalized).not.toEqual(plain);
  });
  test('repetition penalty and no-repeat n-gram', async () => {
    await checkAgainstReference({ repetitionPenalty: 1.8, noRepeatNgramSize: 2 }, 16);
  });
  test('embedding bias', async () => {
    const out = await checkAgainstReference({ embeddingBias: { 7: 30, 8: -Infinity } });
    expect(out.every((id) => id === 7)).toBe(true);
  });
  test('bad words', async () => {
    const plain = await checkAgainstReference({}, 8);
    const banned = await checkAgainstReference({ badWords: [[plain[0]], [plain[1], plain[2]]] }, 8);
    expect(banned[0]).not.toBe(plain[0]);
  });
  test('min tokens', async () => {
    // The end id is banned until minTokens: make it the greedy token everywhere with a bias.
    const config = { embeddingBias: { 2: 50 }, endId: 2, minTokens: 5 };
    const result = await llama.executor.generate({ inputIds: prompt(1), maxTokens: 12, ...config });
    expect(result.outputIds).toHaveLength(6);
    expect(result.outputIds[5]).toBe(2);
    expect(result.finishReason).toBe('eos');
    await checkAgainstReference({ embeddingBias: { 2: 50 }, endId: 2, minTokens: 5 }, 5, 1);
  });
});

describe('stop words', () => {
  test('token stop sequences end the output, excluded by default', async () => {
    const plain = (await llama.executor.generate({ inputIds: prompt(0), maxTokens: 12, ignoreEos: true })).outputIds;
    const stop = [plain[4], plain[5]];
    const cut = await llama.executor.generate({ inputIds: prompt(0), maxTokens: 12, ignoreEos: true, stopWords: [stop] });
    expect(cut.finishReason).toBe('stop');
    const at = plain.findIndex((_, i) => plain[i] === stop[0] && plain[i + 1] === stop[1]);
    expect(cut.outputIds).toEqual(plain.slice(0, at));
    const kept = await llama.executor.generate({ inputIds: prompt(0), maxTokens: 12, ignoreEos: true, stopWords: [stop], includeStopText: true });
    expect(kept.outputIds).toEqual(plain.slice(0, at + 2));
  });

  test('stop strings are matched across token boundaries on the decoded text', async () => {
    const plain = await scribe.generate('And the LORD said unto Moses,', { maxTokens: 32 });
    // A stop string that spans tokens: the middle of the text.
    const start = Math.floor(plain.text.length / 3);
    const stopText = plain.text.slice(start, start + 5);
    const at = plain.text.indexOf(stopText);
    const cut = await scribe.generate('And the LORD said unto Moses,', { maxTokens: 32, stopWords: [stopText] });
    expect(cut.finishReason).toBe('stop');
    expect(cut.text).toBe(plain.text.slice(0, at));
    const kept = await scribe.generate('And the LORD said unto Moses,', { maxTokens: 32, stopWords: [stopText], includeStopText: true });
    expect(kept.text).toBe(plain.text.slice(0, at + stopText.length));
  });

  test('string stop words without a tokenizer are refused by the bare executor', () => {
    expect(() => llama.executor.enqueue({ inputIds: prompt(0), maxTokens: 4, stopWords: ['x'] })).toThrow(SamplingConfigError);
  });
});

describe('seeds', () => {
  test('the same seed gives the same tokens whatever else runs in the batch', async () => {
    const request: ExecutorRequest = { inputIds: prompt(2), maxTokens: 16, ignoreEos: true, temperature: 1.3, topP: 0.95, seed: 1234 };
    const alone = await llama.executor.generate(request);
    const noise = Array.from({ length: 6 }, (_, i) =>
      llama.executor.generate({ inputIds: prompt(i % 3).slice(0, 3 + i), maxTokens: 5 + i, ignoreEos: true, temperature: 0.5 + i * 0.2, topK: 20 }),
    );
    const [batched] = await Promise.all([llama.executor.generate(request), ...noise]);
    expect(batched.outputIds).toEqual(alone.outputIds);
  });

  test('scribe-7m: temperature sampling with a seed is reproducible and differs across seeds', async () => {
    const run = (seed: number) => scribe.generate('And God said,', { maxTokens: 24, temperature: 1, seed });
    const a = await run(7);
    expect((await run(7)).outputIds).toEqual(a.outputIds);
    const others = await Promise.all([8, 9, 10].map(run));
    expect(others.some((o) => o.text !== a.text)).toBe(true);
  });

  test('numReturnSequences without beams gives independent samples', async () => {
    const result = await scribe.generate('And God said,', { maxTokens: 16, temperature: 1, seed: 3, numReturnSequences: 3 });
    expect(result.sequences).toHaveLength(3);
    expect(new Set(result.sequences?.map((s) => s.text)).size).toBeGreaterThan(1);
    expect(result.text).toBe(result.sequences?.[0].text);
  });
});
