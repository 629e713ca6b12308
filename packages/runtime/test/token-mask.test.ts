// Constrained decoding through the executor: a request's tokenMask source gives the allowed tokens of
// each step, and the native sampler masks every other one first, in every sampling mode. Checked on the
// llama fixture (float32) against @kiln/sampling's TypeScript reference: greedy runs return their
// generation logits, and the reference (mask included) must choose each token the engine chose.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { TokenMaskSource } from '@kiln/chat';
import { Engine } from '@kiln/runtime';
import { argmax, referenceProcessLogits, tokenMaskOf, type SamplingConfig } from '@kiln/sampling';
import { llamaFixture, makeEngine } from './executor-helpers';

let tmpDir: string;
let llama: Engine;

beforeAll(async () => {
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-token-mask-'));
  const dir = await makeEngine(tmpDir, llamaFixture, 'llama', 'float32', { maxBatchSize: 16, maxSeqLen: 128, maxBeamWidth: 4 });
  llama = await Engine.load(dir, { numThreads: 2 });
}, 300000);

afterAll(async () => {
  await llama?.executor.shutdown();
  llama?.dispose();
  fs.rmSync(tmpDir, { recursive: true, force: true });
});

const prompt = [1, 15, 27, 42, 8, 91, 3];

/** The tokens a step allows: a set that changes with the output so far (a stand-in for a grammar). */
function allowedAfter(generated: readonly number[], vocab: number): number[] {
  const shift = generated.reduce((sum, id) => sum + id, generated.length) % 7;
  return Array.from({ length: vocab }, (_, id) => id).filter((id) => id % 7 === shift || id === 2);
}

/** A TokenMaskSource over allowedAfter that records what it was asked. */
class RuleMasks implements TokenMaskSource {
  readonly asked: number[][] = [];
  readonly beamSteps: number[][][] = [];
  disposed = false;
  constructor(private readonly vocab: number) {}
  async nextMask(generated: readonly number[]): Promise<Uint32Array> {
    this.asked.push([...generated]);
    return tokenMaskOf(this.vocab, allowedAfter(generated, this.vocab));
  }
  async beamMasks(beams: readonly (readonly number[])[]): Promise<Uint32Array[]> {
    this.beamSteps.push(beams.map((beam) => [...beam]));
    return beams.map((beam) => tokenMaskOf(this.vocab, allowedAfter(beam, this.vocab)));
  }
  dispose(): void {
    this.disposed = true;
  }
}

describe('tokenMask', () => {
  it.each<[string, SamplingConfig]>([
    ['greedy', { temperature: 0 }],
    ['greedy with penalties', { temperature: 0, repetitionPenalty: 1.3, frequencyPenalty: 0.5 }],
  ])('%s: every token is the reference choice among the allowed ones', async (_, config) => {
    const vocab = llama.vocabSize;
    const masks = new RuleMasks(vocab);
    const result = await llama.executor.generate({ inputIds: prompt, maxTokens: 12, ignoreEos: true, returnGenerationLogits: true, tokenMask: masks, ...config });
    expect(result.outputIds).toHaveLength(12);
    const logits = result.generationLogits as Float32Array;
    for (let k = 0; k < 12; k++) {
      const generated = result.outputIds.slice(0, k);
      const mask = tokenMaskOf(vocab, allowedAfter(generated, vocab));
      const processed = referenceProcessLogits(logits.subarray(k * vocab, (k + 1) * vocab), { prompt, generated }, { ignoreEos: true, ...config }, mask);
      expect(result.outputIds[k]).toBe(argmax(processed));
    }
    expect(masks.asked).toEqual(Array.from({ length: 12 }, (_, k) => result.outputIds.slice(0, k)));
    expect(masks.disposed).toBe(true);
  });

  it('sampling at temperature 1 draws only allowed tokens, while unconstrained requests run beside it', async () => {
    const vocab = llama.vocabSize;
    const runs = await Promise.all(
      Array.from({ length: 6 }, (_, seed) =>
        llama.executor.generate({ inputIds: prompt, maxTokens: 16, ignoreEos: true, temperature: 1, topP: 0.95, seed, tokenMask: new RuleMasks(vocab) }),
      ).concat([llama.executor.generate({ inputIds: prompt, maxTokens: 16, ignoreEos: true, temperature: 1, seed: 99 })]),
    );
    for (const run of runs.slice(0, 6)) {
      run.outputIds.forEach((id, k) => expect(allowedAfter(run.outputIds.slice(0, k), vocab)).toContain(id));
    }
    const free = runs[6].outputIds;
    expect(free.some((id, k) => !allowedAfter(free.slice(0, k), vocab).includes(id))).toBe(true);
  });

  it('beam search masks each beam with its own mask', async () => {
    const vocab = llama.vocabSize;
    const masks = new RuleMasks(vocab);
    const result = await llama.executor.generate({ inputIds: prompt, maxTokens: 10, ignoreEos: true, beamWidth: 4, numReturnSequences: 4, tokenMask: masks });
    expect(result.sequences).toHaveLength(4);
    for (const sequence of result.sequences ?? []) {
      sequence.outputIds.forEach((id, k) => expect(allowedAfter(sequence.outputIds.slice(0, k), vocab)).toContain(id));
    }
    // One mask for the first token, then one step of beams per later token.
    expect(masks.asked).toEqual([[]]);
    expect(masks.beamSteps).toHaveLength(9);
    expect(masks.beamSteps[0]).toHaveLength(4);
  });

  it('a source that fails ends the request with its error', async () => {
    const vocab = llama.vocabSize;
    const failing: TokenMaskSource = {
      nextMask: async (generated) => {
        if (generated.length === 3) throw new Error('grammar exploded');
        return tokenMaskOf(vocab, [5, 6]);
      },
      beamMasks: async () => [],
      dispose: () => undefined,
    };
    await expect(llama.executor.generate({ inputIds: prompt, maxTokens: 8, ignoreEos: true, tokenMask: failing })).rejects.toThrow(/grammar exploded/);
  });

  it('a mask that allows nothing is refused, naming it', async () => {
    const empty: TokenMaskSource = { nextMask: async () => new Uint32Array(Math.ceil(llama.vocabSize / 32)), beamMasks: async () => [], dispose: () => undefined };
    await expect(llama.executor.generate({ inputIds: prompt, maxTokens: 4, tokenMask: empty })).rejects.toThrow(/tokenMask allows no token/);
    const later: TokenMaskSource = {
      nextMask: async (generated) => (generated.length === 0 ? tokenMaskOf(llama.vocabSize, [4]) : new Uint32Array(Math.ceil(llama.vocabSize / 32))),
      beamMasks: async () => [],
      dispose: () => undefined,
    };
    await expect(llama.executor.generate({ inputIds: prompt, maxTokens: 4, ignoreEos: true, tokenMask: later })).rejects.toThrow(/allows no token/);
  });
});
