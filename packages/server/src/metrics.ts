// Prometheus metrics of one server, in a registry of its own (several servers in one process, as in
// tests, must not share counters). Executor state (queue, running requests, KV blocks) is read from
// `Executor.stats()` at scrape time; per-request figures are recorded when a request finishes.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ExecutorStats, RequestStats } from '@kiln/runtime';

export class ServerMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<'route' | 'status'>;
  readonly promptTokens: Counter;
  readonly generatedTokens: Counter;
  readonly timeToFirstToken: Histogram;
  readonly timePerOutputToken: Histogram;

  constructor(readStats: () => ExecutorStats | undefined, inFlight: () => number) {
    const registers = [this.registry];
    // Executor.stats() builds its recent iterations (256 objects) through N-API each call: one scrape
    // reads it once for its five gauges, not five times (a scrape cost ~9 ms of the event loop, and kiln
    // bench --url scrapes every 250 ms). The copy is dropped once the scrape's microtasks are done.
    let cached: { value: ExecutorStats | undefined } | undefined;
    const stats = (): ExecutorStats | undefined => {
      if (cached === undefined) {
        cached = { value: readStats() };
        setImmediate(() => (cached = undefined));
      }
      return cached.value;
    };
    // Process figures (resident memory, heap, event loop lag) in this registry too.
    collectDefaultMetrics({ register: this.registry });
    this.requests = new Counter({
      name: 'kiln_http_requests_total',
      help: 'HTTP requests by route and status code (499: the client closed the connection first).',
      labelNames: ['route', 'status'],
      registers,
    });
    this.promptTokens = new Counter({ name: 'kiln_prompt_tokens_total', help: 'Prompt tokens of the generation requests admitted.', registers });
    this.generatedTokens = new Counter({ name: 'kiln_generation_tokens_total', help: 'Tokens generated.', registers });
    this.timeToFirstToken = new Histogram({
      name: 'kiln_time_to_first_token_seconds',
      help: 'From enqueue to the first generated token.',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.timePerOutputToken = new Histogram({
      name: 'kiln_time_per_output_token_seconds',
      help: 'Mean time between generated tokens after the first, per request.',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers,
    });
    const fromStats = (name: string, help: string, pick: (s: ExecutorStats) => number): void => {
      new Gauge({
        name,
        help,
        registers,
        collect() {
          const s = stats();
          if (s) this.set(pick(s));
        },
      });
    };
    fromStats('kiln_queue_length', 'Requests waiting in the executor queue.', (s) => s.waitingRequests);
    fromStats('kiln_running_requests', 'Requests running in the executor (admitted into its batch).', (s) => s.activeRequests);
    fromStats('kiln_kv_blocks_used', 'KV cache blocks referenced by a request.', (s) => s.kvBlocksUsed);
    fromStats('kiln_kv_blocks_free', 'KV cache blocks a request could take now (including cached prefixes).', (s) => s.kvBlocksFree);
    fromStats('kiln_kv_blocks_total', 'KV cache blocks in all.', (s) => s.kvBlocksTotal);
    new Gauge({
      name: 'kiln_http_generation_requests_in_flight',
      help: 'Generation requests the server is handling (queued, running or streaming).',
      registers,
      collect() {
        this.set(inFlight());
      },
    });
  }

  /** Records a finished executor request's figures. */
  recordRequest(stats: RequestStats | undefined): void {
    if (!stats) return;
    this.generatedTokens.inc(stats.numOutputTokens);
    if (stats.numOutputTokens > 0) this.timeToFirstToken.observe(stats.timeToFirstTokenMs / 1000);
    if (stats.numOutputTokens > 1) this.timePerOutputToken.observe(stats.timePerOutputTokenMs / 1000);
  }
}
