// The in-flight batching executor end to end, on real engines: the llama fixture (float32) and the
// built-in scribe-7m, converted and built into a temporary folder. Every scheduling feature (batching,
// chunked prefill, prefix reuse, preemption, cancellation) must leave each request's tokens exactly as
// they are when it runs alone.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Engine, type ExecutorRequest } from '@kiln/runtime';
import { scribe7mPath } from '@kiln/scribe-7m';
import { llamaFixture, makeEngine, prompts, rng, withEngine } from './executor-helpers';

let tmpDir: string;
let llamaDir: string;
let scribeDir: string;

beforeAll(async () => {
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-executor-'));
  llamaDir = await makeEngine(tmpDir, llamaFixture, 'llama', 'float32', { maxBatchSize: 32, maxSeqLen: 256 });
  scribeDir = await makeEngine(tmpDir, scribe7mPath, 'scribe', undefined, { maxBatchSize: 32, maxSeqLen: 512 });
}, 300000);

afterAll(() => {
  fs.rmSync(tmpDir, { recursive: true, force: true });
});

/** Largest |a - b| over a row, relative to the row's largest |b|. */
function maxRelativeError(actual: Float32Array, expected: Float32Array, vocab: number): number {
  let worst = 0;
  for (let row = 0; row * vocab < expected.length; row++) {
    let difference = 0;
    let scale = 0;
    for (let i = row * vocab; i < (row + 1) * vocab; i++) {
      difference = Math.max(difference, Math.abs(actual[i] - expected[i]));
      scale = Math.max(scale, Math.abs(expected[i]));
    }
    worst = Math.max(worst, difference / scale);
  }
  return worst;
}

/** Each request alone, one after the other. */
async function alone(engine: Engine, requests: ExecutorRequest[]) {
  const results = [];
  for (const request of requests) results.push(await engine.executor.generate(request));
  return results;
}

describe.each([
  ['llama fixture (float32)', () => llamaDir, 512],
  ['scribe-7m', () => scribeDir, 4096],
])('batch invariance on %s', (_name, dir, vocab) => {
  test('32 concurrent greedy requests give the tokens and logits each gives alone', async () => {
    await withEngine(dir(), {}, async (engine) => {
      const requests: ExecutorRequest[] = prompts(7, 32, vocab, 1, 48).map((inputIds, index) => ({
        inputIds,
        maxTokens: 4 + (index % 9),
        ignoreEos: true,
        returnGenerationLogits: true,
      }));
      const expected = await alone(engine, requests);
      const peak: number[] = [];
      const unsubscribe = engine.executor.onIteration((stats) => peak.push(stats.activeRequests));
      const together = await Promise.all(requests.map((request) => engine.executor.generate(request)));
      unsubscribe();
      expect(Math.max(...peak)).toBeGreaterThan(16);  // they really ran together
      together.forEach((result, index) => {
        expect(result.outputIds).toEqual(expected[index].outputIds);
        expect(result.finishReason).toBe('length');
        expect(maxRelativeError(result.generationLogits as Float32Array, expected[index].generationLogits as Float32Array, vocab)).toBeLessThan(1e-4);
      });
      expect(engine.executor.stats().kvBlocksFree).toBe(engine.executor.stats().kvBlocksTotal);
    });
  });
});

describe('scheduling leaves the tokens unchanged', () => {
  test('chunked prefill: prompts longer than maxNumTokens, while others decode', async () => {
    const requests: ExecutorRequest[] = prompts(11, 6, 512, 30, 90).map((inputIds) => ({ inputIds, maxTokens: 12, ignoreEos: true, returnGenerationLogits: true }));
    const expected = await withEngine(llamaDir, { enableBlockReuse: false }, (engine) => alone(engine, requests));
    await withEngine(llamaDir, { maxNumTokens: 16, enableBlockReuse: false }, async (engine) => {
      const chunked: number[] = [];
      engine.executor.onIteration((stats) => {
        expect(stats.numTokens).toBeLessThanOrEqual(16);
        if (stats.numContextTokens > 0 && stats.numGenerationTokens > 0) chunked.push(stats.iteration);
      });
      const together = await Promise.all(requests.map((request) => engine.executor.generate(request)));
      together.forEach((result, index) => {
        expect(result.outputIds).toEqual(expected[index].outputIds);
        expect(maxRelativeError(result.generationLogits as Float32Array, expected[index].generationLogits as Float32Array, 512)).toBeLessThan(1e-4);
      });
      expect(chunked.length).toBeGreaterThan(0);  // prefill chunks and decode tokens shared steps
    });
  });

  test('prefix reuse: requests sharing a 2-block prefix reuse its blocks', async () => {
    const [prefix] = prompts(13, 1, 512, 32, 32);  // two blocks of 16 tokens
    const tails = prompts(17, 4, 512, 1, 20);
    const requests: ExecutorRequest[] = tails.map((tail) => ({ inputIds: [...prefix, ...tail], maxTokens: 10, ignoreEos: true }));
    const expected = await withEngine(llamaDir, { enableBlockReuse: false }, (engine) => alone(engine, requests));
    await withEngine(llamaDir, {}, async (engine) => {
      const first = await engine.executor.generate(requests[0]);
      expect(first.outputIds).toEqual(expected[0].outputIds);
      expect(first.stats.reusedBlocks).toBe(0);
      const rest = await Promise.all(requests.slice(1).map((request) => engine.executor.generate(request)));
      rest.forEach((result, index) => {
        expect(result.outputIds).toEqual(expected[index + 1].outputIds);
        expect(result.stats.reusedBlocks).toBe(2);
      });
      // The same prompt again: every full block but the one holding the last token is reused.
      const again = await engine.executor.generate(requests[0]);
      expect(again.outputIds).toEqual(expected[0].outputIds);
      expect(again.stats.reusedBlocks).toBe(Math.floor(((requests[0].inputIds.length as number) - 1) / 16));
      const stats = engine.executor.stats();
      expect(stats.kvBlocksFree).toBe(stats.kvBlocksTotal);
      expect(stats.kvBlocksCached).toBeGreaterThan(0);
    });
  });

  test.each(['guaranteedNoEvict', 'maxUtilization'] as const)('a KV cache too small for every request: %s', async (policy) => {
    const requests: ExecutorRequest[] = prompts(19, 6, 512, 18, 30).map((inputIds) => ({ inputIds, maxTokens: 24, ignoreEos: true }));
    const expected = await withEngine(llamaDir, { enableBlockReuse: false }, (engine) => alone(engine, requests));
    // 5 blocks of 16: one request needs up to 4 blocks in all, 2 for its prompt.
    await withEngine(llamaDir, { kvCacheTokens: 80, capacitySchedulerPolicy: policy, enableBlockReuse: false }, async (engine) => {
      let preempted = 0;
      let maxActive = 0;
      engine.executor.onIteration((stats) => {
        preempted += stats.preempted;
        maxActive = Math.max(maxActive, stats.activeRequests);
      });
      const together = await Promise.all(requests.map((request) => engine.executor.generate(request)));
      together.forEach((result, index) => expect(result.outputIds).toEqual(expected[index].outputIds));
      if (policy === 'guaranteedNoEvict') {
        expect(preempted).toBe(0);
        expect(maxActive).toBe(1);  // queued: one request at a time fits with all its tokens
      } else {
        expect(preempted).toBeGreaterThan(0);
        expect(together.some((result) => result.stats.preemptions > 0)).toBe(true);
      }
      const stats = engine.executor.stats();
      expect(stats.kvBlocksFree).toBe(stats.kvBlocksTotal);
    });
  });
});

describe('cancellation', () => {
  test('aborting a stream stops it within one iteration and returns its blocks', async () => {
    await withEngine(scribeDir, {}, async (engine) => {
      const initial = engine.executor.stats().kvBlocksFree;
      const controller = new AbortController();
      const events: number[] = [];
      // Events already queued for JavaScript when abort() runs still arrive; what must stop is the
      // executor: at most the iteration running at that moment may still produce a token.
      let iterationAtAbort = Infinity;
      let tokensAfterAbort = 0;
      let last: string | undefined;
      for await (const event of engine.executor.stream({ inputIds: [1, 2, 3, 4, 5], maxTokens: 400, ignoreEos: true }, { signal: controller.signal })) {
        if (event.iteration > iterationAtAbort) tokensAfterAbort += event.outputIds.length;
        events.push(...event.outputIds);
        if (events.length >= 5 && !controller.signal.aborted) {
          controller.abort();
          // Read after the cancel was registered: the executor's steps completed by then.
          iterationAtAbort = engine.executor.stats().iterations;
        }
        last = event.finishReason;
      }
      expect(last).toBe('cancelled');
      expect(tokensAfterAbort).toBeLessThanOrEqual(1);
      expect(events.length).toBeLessThan(400);
      expect(engine.executor.stats().kvBlocksFree).toBe(initial);
    });
  });

  test('after a mixed run of completed and cancelled requests, every block is free', async () => {
    await withEngine(scribeDir, {}, async (engine) => {
      const initial = engine.executor.stats().kvBlocksFree;
      const random = rng(23);
      const runs = prompts(29, 12, 4096, 5, 60).map(async (inputIds, index) => {
        const controller = new AbortController();
        const cancelAfter = index % 2 === 0 ? 1 + Math.floor(random() * 20) : Infinity;
        let count = 0;
        let finish: string | undefined;
        for await (const event of engine.executor.stream({ inputIds, maxTokens: 40, ignoreEos: true }, { signal: controller.signal })) {
          count += event.outputIds.length;
          if (count >= cancelAfter) controller.abort();
          finish = event.finishReason;
        }
        return finish;
      });
      const finishes = await Promise.all(runs);
      expect(finishes.filter((f) => f === 'cancelled').length).toBeGreaterThan(0);
      expect(finishes.filter((f) => f === 'length').length).toBeGreaterThan(0);
      expect(engine.executor.stats().kvBlocksFree).toBe(initial);
    });
  });

  test('leaving a stream early cancels it; shutdown({cancel}) cancels what is in flight', async () => {
    const engine = await Engine.load(scribeDir, { numThreads: 2 });
    try {
      for await (const event of engine.executor.stream({ inputIds: [5, 6, 7], maxTokens: 300, ignoreEos: true })) {
        if (event.outputIds.length > 0) break;
      }
      const pending = engine.executor.generate({ inputIds: [8, 9], maxTokens: 400, ignoreEos: true });
      await new Promise((resolve) => setTimeout(resolve, 20));
      await engine.executor.shutdown({ cancel: true });
      const result = await pending;
      expect(result.finishReason).toBe('cancelled');
      expect(() => engine.executor.enqueue({ inputIds: [1], maxTokens: 1 })).toThrow(/shut down/);
    } finally {
      engine.dispose();
    }
  });
});
