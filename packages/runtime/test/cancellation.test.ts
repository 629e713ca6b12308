// One cancellation rule (docs/cancellation.md) at every entry point: Engine.generate, LLM.generate,
// LLM.generateStream, Executor.generate and Executor.stream take the same `signal`; aborted before the
// call, during prefill, during decode, or by dispose(), each ends with finish reason "cancelled" (never
// an AbortError), stats set, and the KV blocks back to what they were. Then the finish reasons "eos",
// "stop" (a stop string or stop token ids), "length" and "cancelled", each with its stats.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LLM, type ExecutorStats, type LLMLoadOptions, type RequestStats } from '@kiln/runtime';
import { scribe7mPath } from '@kiln/scribe-7m';
import { makeEngine, prompts } from './executor-helpers';

let tmpDir: string;
let scribeDir: string;
const reference = JSON.parse(fs.readFileSync(path.join(scribe7mPath, 'reference.json'), 'utf8')) as { prompts: { input_ids: number[]; greedy: number[] }[] };

beforeAll(async () => {
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-cancellation-'));
  scribeDir = await makeEngine(tmpDir, scribe7mPath, 'scribe', undefined, { maxBatchSize: 8, maxSeqLen: 512 });
}, 300000);

afterAll(() => {
  fs.rmSync(tmpDir, { recursive: true, force: true });
});

// maxNumTokens 4: a 480-token prompt is prefilled in 120 steps, so a signal can fire in the middle.
const LOAD: LLMLoadOptions = { numThreads: 2, maxNumTokens: 4 };
const LONG_PROMPT = prompts(41, 1, 4096, 480, 480)[0];

/** Aborts once the executor has run a step after now (prefill steps report no event: its stats are polled). */
function abortAfterFirstStep(llm: LLM, controller: AbortController): void {
  const start = llm.engine.executor.stats().iterations;
  const poll = (): void => {
    if (llm.engine.executor.stats().iterations > start) controller.abort();
    else setImmediate(poll);
  };
  setImmediate(poll);
}

interface Outcome {
  finishReason: string;
  outputIds: number[];
  stats: RequestStats | undefined;
}

/** Each entry point, as one call: `onToken` sees each token as it arrives. */
type EntryPoint = (llm: LLM, inputIds: number[], maxTokens: number, signal: AbortSignal | undefined, onToken: (id: number) => void) => Promise<Outcome>;

const entryPoints: [string, EntryPoint][] = [
  ['Engine.generate', (llm, inputIds, maxTokens, signal, onToken) => llm.engine.generate(inputIds, { maxTokens, ignoreEos: true, signal, onToken })],
  ['LLM.generate', (llm, inputIds, maxTokens, signal, onToken) => llm.generate(inputIds, { maxTokens, ignoreEos: true, signal, onToken })],
  [
    'LLM.generateStream',
    async (llm, inputIds, maxTokens, signal, onToken) => {
      const outputIds: number[] = [];
      for await (const chunk of llm.generateStream(inputIds, { maxTokens, ignoreEos: true, signal })) {
        chunk.tokenIds.forEach((id) => (outputIds.push(id), onToken(id)));
        if (chunk.finishReason) return { finishReason: chunk.finishReason, outputIds, stats: chunk.stats };
      }
      throw new Error('no finish reason');
    },
  ],
  [
    'Executor.generate',
    async (llm, inputIds, maxTokens, signal, onToken) => {
      // Executor.generate reports tokens at the end only: watch the iterations for decode progress.
      let seen = 0;
      const off = llm.engine.executor.onIteration((stats) => {
        if (stats.numGenerationTokens > 0 || (stats.numContextTokens > 0 && stats.contextRequests > 0 && stats.numTokens > 0)) onToken(seen++);
      });
      try {
        return await llm.engine.executor.generate({ inputIds, maxTokens, ignoreEos: true }, { signal });
      } finally {
        off();
      }
    },
  ],
  [
    'Executor.stream',
    async (llm, inputIds, maxTokens, signal, onToken) => {
      const outputIds: number[] = [];
      for await (const event of llm.engine.executor.stream({ inputIds, maxTokens, ignoreEos: true }, { signal })) {
        event.outputIds.forEach((id) => (outputIds.push(id), onToken(id)));
        if (event.finishReason) return { finishReason: event.finishReason, outputIds, stats: event.stats };
      }
      throw new Error('no finish reason');
    },
  ],
];

function expectBlocksBack(stats: ExecutorStats, initialFree: number): void {
  expect(stats.kvBlocksUsed).toBe(0);
  expect(stats.kvBlocksFree).toBe(initialFree);
}

describe.each(entryPoints)('cancelling %s', (_name, call) => {
  let llm: LLM;
  let initialFree: number;
  beforeAll(async () => {
    llm = await LLM.load(scribeDir, LOAD);
    initialFree = llm.engine.executor.stats().kvBlocksFree;
  });
  afterAll(async () => {
    await llm.dispose();
  });

  test('before the call: "cancelled" at once, no token, nothing queued', async () => {
    const controller = new AbortController();
    controller.abort();
    const iterations = llm.engine.executor.stats().iterations;
    const tokens: number[] = [];
    const outcome = await call(llm, [1, 2, 3], 50, controller.signal, (id) => tokens.push(id));
    expect(outcome.finishReason).toBe('cancelled');
    expect(outcome.outputIds).toEqual([]);
    expect(outcome.stats).toMatchObject({ numPromptTokens: 3, numOutputTokens: 0, totalTimeMs: 0 });
    expect(tokens).toEqual([]);
    expect(llm.engine.executor.stats().iterations).toBe(iterations);  // the executor never saw it
    expectBlocksBack(llm.engine.executor.stats(), initialFree);
  });

  test('during prefill: "cancelled" before the first token', async () => {
    const controller = new AbortController();
    abortAfterFirstStep(llm, controller);
    const outcome = await call(llm, LONG_PROMPT, 20, controller.signal, () => {});
    expect(outcome.finishReason).toBe('cancelled');
    expect(outcome.outputIds).toEqual([]);
    expect(outcome.stats).toMatchObject({ numPromptTokens: LONG_PROMPT.length, numOutputTokens: 0 });
    expectBlocksBack(llm.engine.executor.stats(), initialFree);
  });

  test('during decode: "cancelled" with the tokens so far', async () => {
    const controller = new AbortController();
    let seen = 0;
    const outcome = await call(llm, [5, 6, 7, 8], 400, controller.signal, () => {
      if (++seen === 3) controller.abort();
    });
    expect(outcome.finishReason).toBe('cancelled');
    expect(outcome.outputIds.length).toBeLessThan(400);
    expect(outcome.stats?.numOutputTokens).toBeGreaterThanOrEqual(_name === 'Executor.generate' ? 1 : 3);
    if (_name !== 'Executor.generate') expect(outcome.outputIds.length).toBeGreaterThanOrEqual(3);
    expectBlocksBack(llm.engine.executor.stats(), initialFree);
  });

  test('by dispose(): the request ends "cancelled", dispose waits until its KV blocks are free', async () => {
    const own = await LLM.load(scribeDir, LOAD);
    const executor = own.engine.executor;
    const free = executor.stats().kvBlocksFree;
    let started!: () => void;
    const decoding = new Promise<void>((resolve) => (started = resolve));
    let seen = 0;
    const pending = call(own, [9, 10, 11], 400, undefined, () => {
      if (++seen === 2) started();
    });
    await decoding;
    await own.dispose();
    const outcome = await pending;
    expect(outcome.finishReason).toBe('cancelled');
    expect(outcome.outputIds.length).toBeLessThan(400);
    expect(outcome.stats?.numOutputTokens).toBeGreaterThanOrEqual(1);
    expectBlocksBack(executor.stats(), free);  // the state once the request had left, before the memory was freed
    await expect(own.generate([1], { maxTokens: 1 })).rejects.toThrow('has been disposed');
    await own.dispose();  // idempotent
  });
});

describe('finish reasons and stats', () => {
  let llm: LLM;
  beforeAll(async () => {
    llm = await LLM.load(scribeDir, { numThreads: 2 });
  });
  afterAll(async () => {
    await llm.dispose();
  });

  function expectStats(stats: RequestStats | undefined, promptLength: number, outputLength: number): void {
    expect(stats).toBeDefined();
    expect(stats?.numPromptTokens).toBe(promptLength);
    expect(stats?.numOutputTokens).toBe(outputLength);
    expect(stats?.totalTimeMs).toBeGreaterThan(0);
    expect(stats?.timeToFirstTokenMs).toBeGreaterThan(0);
  }

  async function streamed(prompt: number[], options: Parameters<LLM['generateStream']>[1]) {
    const outputIds: number[] = [];
    let text = '';
    for await (const chunk of llm.generateStream(prompt, options)) {
      outputIds.push(...chunk.tokenIds);
      text += chunk.text;
      if (chunk.finishReason) return { finishReason: chunk.finishReason, stats: chunk.stats, text, outputIds };
    }
    throw new Error('no finish reason');
  }

  test('eos: the model\'s end-of-sequence token', async () => {
    const { input_ids: prompt, greedy } = reference.prompts[0];
    const expected = greedy.slice(0, greedy.indexOf(0) + 1);  // scribe-7m's end id is 0
    const result = await llm.generate(prompt, { maxTokens: 24 });
    expect(result.finishReason).toBe('eos');
    expect(result.outputIds).toEqual(expected);
    expectStats(result.stats, prompt.length, expected.length);
    const engine = await llm.engine.generate(prompt, { maxTokens: 24 });
    expect(engine.finishReason).toBe('eos');
    expectStats(engine.stats, prompt.length, expected.length);
    const stream = await streamed(prompt, { maxTokens: 24 });
    expect(stream.finishReason).toBe('eos');
    expectStats(stream.stats, prompt.length, expected.length);
    // An explicit endId is an end-of-sequence too.
    const withEndId = await llm.engine.executor.generate({ inputIds: prompt, maxTokens: 24, endId: greedy[2] });
    expect(withEndId).toMatchObject({ finishReason: 'eos', outputIds: greedy.slice(0, 3) });
  });

  test('stop: a stop string ends the text before it; stats count the tokens up to it', async () => {
    const prompt = reference.prompts[1].input_ids;
    const plain = await llm.generate(prompt, { maxTokens: 32, ignoreEos: true });
    const stopText = plain.text.slice(Math.floor(plain.text.length / 2), Math.floor(plain.text.length / 2) + 4);
    const cut = await llm.generate(prompt, { maxTokens: 32, ignoreEos: true, stopWords: [stopText] });
    expect(cut.finishReason).toBe('stop');
    expect(cut.text).toBe(plain.text.slice(0, plain.text.indexOf(stopText)));
    expectStats(cut.stats, prompt.length, cut.outputIds.length);
    expect(cut.outputIds.length).toBeLessThan(32);
    const stream = await streamed(prompt, { maxTokens: 32, ignoreEos: true, stopWords: [stopText] });
    expect(stream).toMatchObject({ finishReason: 'stop', text: cut.text, outputIds: cut.outputIds });
    expectStats(stream.stats, prompt.length, cut.outputIds.length);
    // The request has left the executor by the time the call returns.
    expect(llm.engine.executor.stats().kvBlocksUsed).toBe(0);
  });

  test('stop: stop token ids', async () => {
    const prompt = reference.prompts[1].input_ids;
    const plain = (await llm.generate(prompt, { maxTokens: 16, ignoreEos: true })).outputIds;
    const stop = [plain[5], plain[6]];
    const at = plain.findIndex((_, i) => plain[i] === stop[0] && plain[i + 1] === stop[1]);
    const viaLlm = await llm.generate(prompt, { maxTokens: 16, ignoreEos: true, stopWords: [stop] });
    expect(viaLlm).toMatchObject({ finishReason: 'stop', outputIds: plain.slice(0, at) });
    expectStats(viaLlm.stats, prompt.length, at + 2);  // the stop ids were generated, then left out
    const viaEngine = await llm.engine.generate(prompt, { maxTokens: 16, ignoreEos: true, stopWords: [stop] });
    expect(viaEngine).toMatchObject({ finishReason: 'stop', outputIds: plain.slice(0, at) });
    expectStats(viaEngine.stats, prompt.length, at + 2);
  });

  test('length: maxTokens', async () => {
    const prompt = reference.prompts[2].input_ids;
    const result = await llm.generate(prompt, { maxTokens: 7, ignoreEos: true });
    expect(result.finishReason).toBe('length');
    expectStats(result.stats, prompt.length, 7);
    const engine = await llm.engine.generate(prompt, { maxTokens: 7, ignoreEos: true });
    expect(engine.finishReason).toBe('length');
    expectStats(engine.stats, prompt.length, 7);
  });

  test('cancelled: stats of what was generated', async () => {
    const controller = new AbortController();
    const result = await llm.generate(reference.prompts[2].input_ids, {
      maxTokens: 300,
      ignoreEos: true,
      signal: controller.signal,
      onToken: () => controller.abort(),
    });
    expect(result.finishReason).toBe('cancelled');
    expect(result.stats.numOutputTokens).toBeGreaterThanOrEqual(1);
    expect(result.stats.numOutputTokens).toBeLessThan(300);
    expect(result.stats.totalTimeMs).toBeGreaterThan(0);
  });
});
