// The synthetic workload of `kiln bench`: random prompts of a fixed length, a fixed output length
// (end-of-sequence ignored), and arrival times: all at once (closed loop, bounded by concurrency) or a
// Poisson process of a given rate. Everything comes from one seeded generator: the same options give
// the same workload.

export interface WorkloadOptions {
  numRequests: number;
  inputLen: number;
  outputLen: number;
  vocabSize: number;
  /** Requests per second of a Poisson process; undefined or Infinity: all arrive at time 0. */
  requestRate?: number;
  seed: number;
}

export interface WorkloadRequest {
  index: number;
  inputIds: number[];
  maxTokens: number;
  /** Seconds after the start at which the request is sent. */
  arrivalS: number;
}

/** mulberry32: a small, fast, seedable generator; enough for synthetic prompts and arrival jitter. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function makeWorkload(options: WorkloadOptions): WorkloadRequest[] {
  const random = seededRandom(options.seed);
  const requests: WorkloadRequest[] = [];
  let clock = 0;
  for (let index = 0; index < options.numRequests; index++) {
    const inputIds = Array.from({ length: options.inputLen }, () => Math.floor(random() * options.vocabSize));
    if (options.requestRate !== undefined && Number.isFinite(options.requestRate)) {
      // Exponential inter-arrival times make a Poisson process (vLLM benchmark_serving's default, burstiness 1).
      clock += -Math.log(1 - random()) / options.requestRate;
    }
    requests.push({ index, inputIds, maxTokens: options.outputLen, arrivalS: clock });
  }
  return requests;
}
