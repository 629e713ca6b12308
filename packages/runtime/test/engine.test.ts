// Engine's own checks: the engine directory's config.json, and the request validation that happens
// before anything reaches the native runtime. The native addon is replaced by a recording fake here; the
// end-to-end tests of packages/cli run the real one.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { NativeExecutorRequest, NativeIterationEvents } from '@kiln/native';

const nativeCalls: { loads: { file: string; options: unknown }[]; requests: NativeExecutorRequest[]; disposed: number } = {
  loads: [],
  requests: [],
  disposed: 0,
};

jest.mock('@kiln/native', () => ({
  loadNative: () => ({
    // Not launched by mpirun: one rank (tensor/pipeline-parallel engines are tested in parallel.test.ts).
    worldInfo: () => ({ rank: 0, size: 1, launchedByMpirun: false, mpiCompiled: true }),
    loadEngine: async (file: string, options: unknown) => {
      nativeCalls.loads.push({ file, options });
      return {
        mapping: { tpSize: 1, ppSize: 1, rank: 0 },
        info: {
          formatVersion: 1,
          backend: 'cpu',
          isa: 'generic',
          activationDType: 'float32',
          device: 'cpu (generic, 2 threads)',
          weightBytes: 4096,
          kvCacheBytes: 8192,
          kvCacheTokens: 16,
          maxBatchSize: 1,
          maxSeqLen: 8,
          maxNumTokens: 8,
          maxLogitRows: 1,
          vocabSize: 16,
          modelJson: '{}',
        },
        // The executor's side, as the runtime drives it: each enqueued request gets tokens 1, 2, ... one
        // per "iteration", then finish reason "length"; cancel and shutdown({cancel}) end it "cancelled".
        ...(() => {
          let listener: ((events: NativeIterationEvents) => void) | undefined;
          let nextId = 1;
          const running = new Map<number, { produced: number; maxTokens: number; cancelled: boolean }>();
          const stats = (iteration: number) => ({ iteration, timestampMs: 0, iterationMs: 0, activeRequests: running.size, waitingRequests: 0, contextRequests: 0, generationRequests: 0, numTokens: 0, numContextTokens: 0, numGenerationTokens: 0, preempted: 0, kvBlocksTotal: 1, kvBlocksUsed: 0, kvBlocksFree: 1, kvBlocksCached: 0 });
          const requestStats = (produced: number) => ({ queueTimeMs: 0, timeToFirstTokenMs: 0, timePerOutputTokenMs: 0, totalTimeMs: 0, numPromptTokens: 1, numOutputTokens: produced, reusedBlocks: 0, preemptions: 0 });
          const step = (id: number): void => {
            const request = running.get(id);
            if (!request) return;
            if (request.cancelled) {
              running.delete(id);
              listener?.({ stats: stats(request.produced), events: [{ id, outputIds: new Int32Array(0), finishReason: 'cancelled', stats: requestStats(request.produced) }] });
              return;
            }
            request.produced++;
            const done = request.produced >= request.maxTokens;
            if (done) running.delete(id);
            listener?.({
              stats: stats(request.produced),
              events: [{ id, outputIds: Int32Array.of(request.produced), ...(done ? { finishReason: 'length' as const, stats: requestStats(request.produced) } : {}) }],
            });
            if (!done) setImmediate(step, id);
          };
          return {
            setEventListener: (next: typeof listener) => (listener = next),
            enqueue: (request: NativeExecutorRequest) => {
              nativeCalls.requests.push(request);
              const id = nextId++;
              running.set(id, { produced: 0, maxTokens: request.maxTokens, cancelled: false });
              setImmediate(step, id);
              return id;
            },
            cancel: (id: number) => {
              const request = running.get(id);
              if (request) request.cancelled = true;
            },
            stats: () => ({ iterations: 0, waitingRequests: 0, activeRequests: running.size, kvBlocksTotal: 1, kvBlocksUsed: running.size > 0 ? 1 : 0, kvBlocksFree: running.size > 0 ? 0 : 1, kvBlocksCached: 0, tokensPerBlock: 16, maxBatchSize: 1, maxNumTokens: 8, recentIterations: [] }),
            shutdown: async (options?: { cancel?: boolean }) => {
              if (options?.cancel) for (const request of running.values()) request.cancelled = true;
              while (running.size > 0) await new Promise((resolve) => setImmediate(resolve));
            },
          };
        })(),
        dispose: () => {
          nativeCalls.disposed++;
        },
      };
    },
  }),
}));

import { Engine } from '@kiln/runtime';

function engineConfig(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    format: 'kiln-engine-dir',
    formatVersion: 1,
    target: { backend: 'cpu', isa: 'generic' },
    buildConfig: { maxBatchSize: 1, maxSeqLen: 8, gatherContextLogits: false },
    buildHash: 'abc',
    checkpoint: {
      architecture: 'LlamaForCausalLM',
      dtype: 'bfloat16',
      model: { vocabSize: 16 },
      generation: { bosTokenId: 0, eosTokenIds: [3], padTokenId: 0 },
    },
    engineFiles: ['rank0.engine'],
    ...overrides,
  };
}

describe('Engine', () => {
  let directory: string;
  let configPath: string;
  beforeEach(() => {
    directory = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-engine-'));
    configPath = path.join(directory, 'config.json');
    fs.writeFileSync(configPath, JSON.stringify(engineConfig()));
    nativeCalls.loads.length = 0;
    nativeCalls.requests.length = 0;
  });
  afterEach(() => fs.rmSync(directory, { recursive: true, force: true }));

  describe('load', () => {
    it('loads the engine file config.json lists, with the options given', async () => {
      const engine = await Engine.load(directory, { numThreads: 2 });
      expect(nativeCalls.loads).toEqual([{ file: path.join(directory, 'rank0.engine'), options: { numThreads: 2, kvCacheTokens: undefined } }]);
      expect(engine.maxSeqLen).toBe(8);
      expect(engine.defaultEndId).toBe(3);
    });

    it('names a missing directory', async () => {
      const missing = path.join(directory, 'nope');
      await expect(Engine.load(missing)).rejects.toThrow(`engine directory ${missing} does not exist`);
    });

    it('names a directory without config.json', async () => {
      fs.rmSync(configPath);
      await expect(Engine.load(directory)).rejects.toThrow(`${directory} is not a Kiln engine directory: ${configPath} is missing`);
    });

    it('refuses a Kiln checkpoint or other JSON, naming the key', async () => {
      fs.writeFileSync(configPath, JSON.stringify(engineConfig({ format: 'kiln-checkpoint' })));
      await expect(Engine.load(directory)).rejects.toThrow(
        `${configPath}: "format" is "kiln-checkpoint", expected "kiln-engine-dir": not a Kiln engine directory`,
      );
    });

    it('refuses another format version', async () => {
      fs.writeFileSync(configPath, JSON.stringify(engineConfig({ formatVersion: 2 })));
      await expect(Engine.load(directory)).rejects.toThrow(`${configPath}: "formatVersion" is 2, but this Kiln reads version 1`);
    });

    it('refuses engine file names that leave the directory', async () => {
      fs.writeFileSync(configPath, JSON.stringify(engineConfig({ engineFiles: ['../rank0.engine'] })));
      await expect(Engine.load(directory)).rejects.toThrow(`${configPath}: "engineFiles" holds "../rank0.engine", which is not a plain file name`);
    });

    it('passes the KV cache options to the native loader, and exposes what it reports', async () => {
      const engine = await Engine.load(directory, { kvCacheMemoryFraction: 0.5, kvCacheBytes: 1 << 20, kvCacheTokens: 64 });
      expect(nativeCalls.loads[0].options).toMatchObject({ kvCacheMemoryFraction: 0.5, kvCacheBytes: 1 << 20, kvCacheTokens: 64 });
      expect(engine.info).toMatchObject({ backend: 'cpu', device: 'cpu (generic, 2 threads)', activationDType: 'float32', weightBytes: 4096, kvCacheBytes: 8192, kvCacheTokens: 16 });
    });

    it.each([0, -0.1, 1.5, Number.NaN])('refuses kvCacheMemoryFraction %p before loading anything', async (fraction) => {
      await expect(Engine.load(directory, { kvCacheMemoryFraction: fraction })).rejects.toThrow(`kvCacheMemoryFraction must be a number in (0, 1], got ${fraction}`);
      await expect(Engine.load(directory, { kvCacheBytes: 0.5 })).rejects.toThrow('kvCacheBytes must be a positive integer, got 0.5');
      expect(nativeCalls.loads).toEqual([]);
    });

    it('refuses invalid JSON and bad options', async () => {
      fs.writeFileSync(configPath, '{');
      await expect(Engine.load(directory)).rejects.toThrow(`${configPath} is not valid JSON`);
      await expect(Engine.load(directory, { numThreads: 0 })).rejects.toThrow('numThreads must be a positive integer, got 0');
    });
  });

  describe('generate', () => {
    let engine: Engine;
    beforeEach(async () => {
      engine = await Engine.load(directory);
    });

    it('passes the prompt and the resolved end id to the native runtime', async () => {
      const tokens: number[] = [];
      const result = await engine.generate([1, 2], { maxTokens: 3, onToken: (id) => tokens.push(id) });
      expect(Array.from(nativeCalls.requests[0].inputIds)).toEqual([1, 2]);
      expect(nativeCalls.requests[0]).toMatchObject({ maxTokens: 3, endId: 3, returnContextLogits: false });
      expect(result).toMatchObject({ outputIds: [1, 2, 3], finishReason: 'length', contextLogits: undefined, generationLogits: undefined, vocabSize: 16 });
      expect(result.stats).toMatchObject({ numOutputTokens: 3 });
      expect(tokens).toEqual([1, 2, 3]);
      await engine.generate([1], { maxTokens: 1, ignoreEos: true });
      expect(nativeCalls.requests[1].endId).toBe(-1);
    });

    it('stops at maxSeqLen rather than failing', async () => {
      await engine.generate([1, 2, 3, 4, 5], { maxTokens: 100 });
      expect(nativeCalls.requests[0].maxTokens).toBe(3);
    });

    it('validates before calling native', async () => {
      await expect(engine.generate([1], { maxTokens: 0 })).rejects.toThrow('maxTokens must be a positive integer, got 0');
      await expect(engine.generate([], { maxTokens: 1 })).rejects.toThrow('the prompt is empty');
      await expect(engine.generate([1, 2, 3, 4, 5, 6, 7, 8], { maxTokens: 1 })).rejects.toThrow(
        "the prompt has 8 tokens, but the engine's maxSeqLen is 8",
      );
      await expect(engine.generate([1, 16], { maxTokens: 1 })).rejects.toThrow("inputIds[1] is 16, not a token id of this engine's vocabulary (size 16)");
      await expect(engine.generate([1], { maxTokens: 1, endId: 99 })).rejects.toThrow('endId 99 is outside the vocabulary (size 16)');
      await expect(engine.generate([1], { maxTokens: 1, returnContextLogits: true })).rejects.toThrow(
        'returnContextLogits needs an engine built with gatherContextLogits',
      );
      expect(nativeCalls.requests).toHaveLength(0);
    });

    it('reports an onToken exception after generation completes', async () => {
      await expect(
        engine.generate([1], {
          maxTokens: 2,
          onToken: () => {
            throw new Error('consumer failed');
          },
        }),
      ).rejects.toThrow('consumer failed');
    });

    it('disposes once and refuses to generate afterwards', async () => {
      const before = nativeCalls.disposed;
      await engine[Symbol.asyncDispose]();
      await engine.dispose();
      expect(nativeCalls.disposed).toBe(before + 1);
      await expect(engine.generate([1], { maxTokens: 1 })).rejects.toThrow('has been disposed');
    });
  });
});
