// Sends a workload to a BenchTarget, closed loop (at most `concurrency` requests in flight) and/or at
// the workload's arrival times, and records client-side timings of every request.
import type { BenchTarget } from './target';
import type { WorkloadRequest } from './workload';

export interface RequestTiming {
  inputLen: number;
  outputTokens: number;
  /** Seconds, from sending to the first token. */
  ttftS: number;
  /** Seconds, from sending to the last token. */
  latencyS: number;
  /** Seconds between consecutive token arrivals (a chunk of k tokens counts as k gaps, vLLM's convention). */
  itlS: number[];
}

export interface DriveResult {
  durationS: number;
  timings: RequestTiming[];
}

export async function drive(target: BenchTarget, workload: WorkloadRequest[], concurrency: number): Promise<DriveResult> {
  const start = performance.now();
  const timings: RequestTiming[] = new Array(workload.length);
  let next = 0;
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  async function runOne(request: WorkloadRequest): Promise<void> {
    const sent = performance.now();
    let last = sent;
    let first = -1;
    const itl: number[] = [];
    const response = await target.send({ inputIds: request.inputIds, maxTokens: request.maxTokens }, (count) => {
      const now = performance.now();
      if (first < 0) {
        first = now;
        for (let k = 1; k < count; k++) itl.push(0);
      } else {
        const gap = (now - last) / 1000 / count;
        for (let k = 0; k < count; k++) itl.push(gap);
      }
      last = now;
    });
    timings[request.index] = {
      inputLen: request.inputIds.length,
      outputTokens: response.outputTokens,
      ttftS: first < 0 ? 0 : (first - sent) / 1000,
      latencyS: (last - sent) / 1000,
      itlS: itl,
    };
  }

  // Each worker takes the next request, waits for its arrival time, and runs it.
  async function worker(): Promise<void> {
    while (next < workload.length) {
      const request = workload[next++];
      const wait = start + request.arrivalS * 1000 - performance.now();
      if (wait > 0) await sleep(wait);
      await runOne(request);
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, workload.length) }, worker));
  return { durationS: (performance.now() - start) / 1000, timings };
}
