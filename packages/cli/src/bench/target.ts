// What `kiln bench` drives. The driver only needs to send a request and be told when each token
// arrives, so the same driver can measure an HTTP server later (an OpenAI-compatible streaming client
// implementing BenchTarget) as well as the in-process executor here.
import type { Engine } from '@kiln/runtime';
import type { BenchMemory } from './memory';

export interface BenchRequest {
  inputIds: number[];
  maxTokens: number;
}

export interface BenchResponse {
  /** Output tokens received. */
  outputTokens: number;
  /** "length", "stop", ... as the target reports it. */
  finishReason: string;
}

export interface BenchTarget {
  /** A short description for reports (engine folder, URL). */
  readonly description: string;
  readonly vocabSize: number;
  /** Sends one request; `onTokens(count)` is called as soon as tokens arrive, in order. */
  send(request: BenchRequest, onTokens: (count: number) => void): Promise<BenchResponse>;
  /** Starts watching the KV blocks in use; the function it returns stops and reports the memory figures. */
  watchMemory(): () => Promise<BenchMemory>;
  close(): Promise<void>;
}

/** The engine's own executor, in this process: tokens arrive once per executor iteration. */
export class InProcessTarget implements BenchTarget {
  readonly description: string;
  readonly vocabSize: number;

  constructor(private readonly engine: Engine) {
    this.description = engine.engineDir;
    this.vocabSize = engine.vocabSize;
  }

  async send(request: BenchRequest, onTokens: (count: number) => void): Promise<BenchResponse> {
    for await (const event of this.engine.executor.stream({ inputIds: request.inputIds, maxTokens: request.maxTokens, ignoreEos: true })) {
      if (event.outputIds.length > 0) onTokens(event.outputIds.length);
      if (event.finishReason !== undefined) {
        return { outputTokens: event.stats?.numOutputTokens ?? 0, finishReason: event.finishReason };
      }
    }
    throw new Error('the request ended without a finish reason');
  }

  /** The engine's weights and KV cache (device memory on cuda), and the most KV blocks in use at the end of any iteration. */
  watchMemory(): () => Promise<BenchMemory> {
    const { info, executor } = this.engine;
    let peak = executor.stats().kvBlocksUsed;
    const stop = executor.onIteration((stats) => {
      if (stats.kvBlocksUsed > peak) peak = stats.kvBlocksUsed;
    });
    return async () => {
      stop();
      const stats = executor.stats();
      return {
        device: info.backend,
        weightBytes: info.weightBytes,
        kvCacheBytes: info.kvCacheBytes,
        kvBlocksTotal: stats.kvBlocksTotal,
        kvBlockTokens: stats.tokensPerBlock,
        peakKvBlocksUsed: Math.max(peak, stats.kvBlocksUsed),
        peakSource: 'every executor iteration',
      };
    };
  }

  async close(): Promise<void> {
    await this.engine.executor.shutdown();
    this.engine.dispose();
  }
}
