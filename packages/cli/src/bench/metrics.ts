// The figures of `kiln bench`, named as vLLM's benchmark_serving.py names them in its JSON (trtllm-bench
// reports the same quantities): throughputs, then mean / median / p50 / p90 / p99 of TTFT, TPOT
// (per request: (latency - TTFT) / (output tokens - 1)), ITL (every gap between tokens) and E2EL.
import type { DriveResult } from './driver';

export interface BenchMetrics {
  completed: number;
  duration_s: number;
  total_input_tokens: number;
  total_output_tokens: number;
  request_throughput: number;
  output_throughput: number;
  total_token_throughput: number;
  [stat: string]: number;
}

/** Linear interpolation between closest ranks, as numpy.percentile's default. */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  const rank = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
}

function summarize(out: BenchMetrics, name: string, valuesS: number[]): void {
  const ms = valuesS.map((v) => v * 1000).sort((a, b) => a - b);
  out[`mean_${name}_ms`] = ms.length ? ms.reduce((a, b) => a + b, 0) / ms.length : 0;
  out[`median_${name}_ms`] = percentile(ms, 50);
  for (const p of [50, 90, 99]) out[`p${p}_${name}_ms`] = percentile(ms, p);
}

export function computeMetrics(result: DriveResult): BenchMetrics {
  const t = result.timings;
  const inputTokens = t.reduce((n, r) => n + r.inputLen, 0);
  const outputTokens = t.reduce((n, r) => n + r.outputTokens, 0);
  const metrics: BenchMetrics = {
    completed: t.length,
    duration_s: result.durationS,
    total_input_tokens: inputTokens,
    total_output_tokens: outputTokens,
    request_throughput: t.length / result.durationS,
    output_throughput: outputTokens / result.durationS,
    total_token_throughput: (inputTokens + outputTokens) / result.durationS,
  };
  summarize(metrics, 'ttft', t.map((r) => r.ttftS));
  summarize(metrics, 'tpot', t.filter((r) => r.outputTokens > 1).map((r) => (r.latencyS - r.ttftS) / (r.outputTokens - 1)));
  summarize(metrics, 'itl', t.flatMap((r) => r.itlS));
  summarize(metrics, 'e2el', t.map((r) => r.latencyS));
  return metrics;
}
