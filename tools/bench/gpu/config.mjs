// What tools/bench/gpu-baseline.mjs measures (issue 10, "GPU speed"): the model shape, the workloads, the
// engine variants and the targets of the "Done when". Every size can be overridden through the
// environment, so that the whole flow also runs as a dry run on a machine without a GPU:
//
//   KILN_BENCH_TARGET=cpu node tools/bench/gpu-baseline.mjs
//
// builds cpu engines of a tiny LLaMA (KILN_BENCH_SHAPE=tiny, the default with the cpu target) and runs
// every phase with smaller counts; the transformers peer runs only where python3 can import torch.
//
// Environment (defaults: the workload on the cuda target; in brackets the cpu dry run's):
//   KILN_BENCH_TARGET          cuda | cpu                                   (cuda)
//   KILN_BENCH_SHAPE           tinyllama | tiny                             (tinyllama [tiny])
//   KILN_BENCH_PROMPT_TOKENS   batch-1 prompt length                        (128)
//   KILN_BENCH_NEW_TOKENS      batch-1 and transformers new tokens          (256 [32])
//   KILN_BENCH_PEER_BATCH      transformers' large batch                    (64 [4])
//   KILN_BENCH_REQUESTS        kiln bench requests at high concurrency      (512 [96])
//   KILN_BENCH_CONCURRENCY     high concurrency                             (64 [32])
//   KILN_BENCH_C1_REQUESTS     kiln bench requests at concurrency 1         (16 [4])
//   KILN_BENCH_INPUT_LEN       kiln bench input tokens                      (128 [32])
//   KILN_BENCH_OUTPUT_LEN      kiln bench output tokens                     (128 [16])
//   KILN_BENCH_TTFT_PROMPT     TTFT prompt length                           (512 [128])
//   KILN_BENCH_TTFT_REQUESTS   TTFT requests (median)                       (20 [5])
//   KILN_BENCH_LONG_PROMPT     long-context batch-1 decode: prompt length   (4000 [256])
//   KILN_BENCH_LONG_NEW_TOKENS long-context batch-1 decode: new tokens      (64 [16])
//   KILN_BENCH_VARIANTS        comma-separated engine variants to run       (all: bfloat16, int8, int4, fp8)
//   KILN_BENCH_SKIP            comma-separated phases to leave out: diagnostics (graphs-off modes, profile,
//                              step timing), serving, http, ttft, ttft-wmma (the reference variant's TTFT
//                              again with KILN_CUDA_PREFILL_ATTENTION=wmma), tuned (the concurrency and
//                              TTFT runs again with KILN_CUDA_GEMM_TUNE=1:
//                              GEMM algorithms chosen by timing, decision 0021), longctx (long-context decode, split-K
//                              on and off), peer, compile (transformers' compiled runs)
//   KILN_BENCH_PEER_TIMEOUT_S  gpu_transformers.py is stopped after this    (300; the phases it finished stay)
//   KILN_BENCH_PYTHON          the Python that runs gpu_transformers.py     (python3)
//   KILN_BENCH_DIR             work folder (models, engines)                (tools/bench/.out)
//   KILN_RESULTS_DIR           where bench-gpu.json / bench-gpu.md go       (tools/bench/.out)

export const SHAPES = {
  // TinyLlama-1.1B's shape (issue 10): 22 layers, hidden 2048, MLP 5632, 32 heads, 4 KV heads, vocab 32000;
  // 4,096 positions (TinyLlama has 2,048) for the long-context decode.
  tinyllama: { layers: 22, hidden: 2048, intermediate: 5632, heads: 32, kvHeads: 4, vocab: 32000, maxPositions: 4096 },
  // The dry run's: the same vocabulary (so that ids above the tokenizer's 4096 travel as on the GPU), 2 small layers.
  tiny: { layers: 2, hidden: 256, intermediate: 704, heads: 4, kvHeads: 2, vocab: 32000, maxPositions: 2048 },
};

/**
 * The engine variants to bench. Each is built twice from the same checkpoint (a batch-1 engine, and the
 * serving engine of `serving` below), and measured at batch 1 (decode ms/token), through `kiln bench` at
 * high concurrency and at concurrency 1, and for TTFT. The `reference` variant (bfloat16) also gets the
 * diagnostic modes (no CUDA graphs, no GEMV), the profile, the HTTP run, and the transformers comparison.
 *
 * Fields: name; build (merged into the build config: dtype and, once kiln build has them, the quantization
 * options); targets: batch1MsPerToken (decode ms/token at batch 1) and highConcurrencyVsReference (output
 * tok/s at high concurrency over the reference variant's).
 *
 * The quantized GPU modes of issue 10 get their entries here when `kiln build` makes them; their targets:
 * int4 (W4A16, group 128) batch1MsPerToken 0.40; int8 (W8A16, per channel) 0.55; FP8 e4m3 0.55 and
 * highConcurrencyVsReference 1.3. (Their accuracy against bfloat16 is a separate report.)
 */
export const VARIANTS = [
  { name: 'bfloat16', reference: true, build: { dtype: 'bfloat16' }, targets: { batch1MsPerToken: 0.85 } },
  // Weight-only int8 (W8A16): bfloat16 activations, int8 linear matrices with per-channel scales.
  { name: 'int8', build: { dtype: 'bfloat16', quantization: 'int8' }, targets: { batch1MsPerToken: 0.55 } },
  // Weight-only int4 (W4A16, group 128, issue 10): bfloat16 activations, int4 linear matrices with a
  // bfloat16 scale per row and group of 128 (decision 0014).
  { name: 'int4', build: { dtype: 'bfloat16', quantization: 'int4', groupSize: 128 }, targets: { batch1MsPerToken: 0.4 } },
  // FP8 e4m3 weights (a scale per matrix) and activations (a dynamic scale per row), bfloat16 elsewhere
  // (decision 0015). Its concurrency ratio needs the bfloat16 variant in the same run.
  { name: 'fp8', build: { dtype: 'bfloat16', quantization: 'fp8' }, targets: { batch1MsPerToken: 0.55, highConcurrencyVsReference: 1.3 } },
];

/** The "Done when" targets that do not depend on the variant. */
export const TARGETS = {
  boundFraction: 0.57, // batch-1 decode: at least this fraction of the HBM bound
  vsCompileBatch1: 3.2, // batch-1 decode: at least this many times transformers + static cache + torch.compile
  vsEagerBatch1: 19, // ... and transformers eager
  highConcurrencyTokS: 25000, // kiln bench, concurrency 64, 512 x (128 in / 128 out): output tok/s
  highConcurrencyVsCompile: 2.2, // ... over transformers + compile at batch 64 (output tok/s of its decode steps)
  highConcurrencyVsC1: 30, // ... over kiln bench at concurrency 1
  ttftMs: 4, // 512-token prompt at concurrency 1
  httpVsInProcess: 0.9, // kiln bench --url at concurrency 64: within 10% of the in-process output tok/s
};

function envInt(name, fallback) {
  const text = process.env[name];
  if (text === undefined || text === '') return fallback;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 1) throw new Error(`${name}: expected a positive integer, got ${JSON.stringify(text)}`);
  return value;
}

const PHASES = ['diagnostics', 'serving', 'http', 'ttft', 'ttft-wmma', 'tuned', 'longctx', 'peer', 'compile'];

/** The run's settings, from the environment. */
export function benchConfig() {
  const target = process.env.KILN_BENCH_TARGET || 'cuda';
  if (target !== 'cuda' && target !== 'cpu') throw new Error(`KILN_BENCH_TARGET: expected cuda or cpu, got ${JSON.stringify(target)}`);
  const dry = target === 'cpu';
  const shapeName = process.env.KILN_BENCH_SHAPE || (dry ? 'tiny' : 'tinyllama');
  const shape = SHAPES[shapeName];
  if (!shape) throw new Error(`KILN_BENCH_SHAPE: expected one of ${Object.keys(SHAPES).join(', ')}, got ${JSON.stringify(shapeName)}`);
  const skip = new Set((process.env.KILN_BENCH_SKIP || '').split(',').map((s) => s.trim()).filter(Boolean));
  for (const phase of skip) if (!PHASES.includes(phase)) throw new Error(`KILN_BENCH_SKIP: unknown phase ${JSON.stringify(phase)} (phases: ${PHASES.join(', ')})`);
  const concurrency = envInt('KILN_BENCH_CONCURRENCY', dry ? 32 : 64);
  const inputLen = envInt('KILN_BENCH_INPUT_LEN', dry ? 32 : 128);
  const outputLen = envInt('KILN_BENCH_OUTPUT_LEN', dry ? 16 : 128);
  const ttftPrompt = envInt('KILN_BENCH_TTFT_PROMPT', dry ? 128 : 512);
  const promptTokens = envInt('KILN_BENCH_PROMPT_TOKENS', 128);
  const newTokens = envInt('KILN_BENCH_NEW_TOKENS', dry ? 32 : 256);
  if (newTokens < 2) throw new Error('KILN_BENCH_NEW_TOKENS: at least 2 (decode time is that of n tokens minus that of 1)');
  const maxSeqLen = Math.max(1024, inputLen + outputLen, ttftPrompt + 8, promptTokens + newTokens);
  return {
    target,
    dry,
    shapeName,
    shape,
    skip,
    variants: (() => {
      const names = (process.env.KILN_BENCH_VARIANTS || '').split(',').map((n) => n.trim()).filter(Boolean);
      for (const n of names) if (!VARIANTS.some((v) => v.name === n)) throw new Error(`KILN_BENCH_VARIANTS: unknown variant ${JSON.stringify(n)} (variants: ${VARIANTS.map((v) => v.name).join(', ')})`);
      return names.length ? VARIANTS.filter((v) => names.includes(v.name)) : VARIANTS;
    })(),
    batch1: {
      promptTokens,
      newTokens,
      runs: 3, // Kiln: median of 3
      // The batch-1 engine, as measured since the first CUDA run (docs/benchmarks.md).
      engine: { maxBatchSize: 1, maxSeqLen: Math.max(512, promptTokens + newTokens), maxNumTokens: Math.max(512, promptTokens) },
    },
    peer: { batch: envInt('KILN_BENCH_PEER_BATCH', dry ? 4 : 64), timeoutS: envInt('KILN_BENCH_PEER_TIMEOUT_S', 300) },
    serving: {
      numRequests: envInt('KILN_BENCH_REQUESTS', dry ? 96 : 512),
      concurrency,
      c1Requests: envInt('KILN_BENCH_C1_REQUESTS', dry ? 4 : 16),
      inputLen,
      outputLen,
      // maxNumTokens: room for chunked prefill of many 128-token prompts in one step.
      engine: { maxBatchSize: concurrency, maxSeqLen, maxNumTokens: Math.max(4096, ttftPrompt) },
    },
    ttft: { promptTokens: ttftPrompt, numRequests: envInt('KILN_BENCH_TTFT_REQUESTS', dry ? 5 : 20) },
    longContext: (() => {
      const prompt = envInt('KILN_BENCH_LONG_PROMPT', dry ? 256 : 4000);
      const fresh = envInt('KILN_BENCH_LONG_NEW_TOKENS', dry ? 16 : 64);
      return { promptTokens: prompt, newTokens: fresh, engine: { maxBatchSize: 1, maxSeqLen: prompt + fresh, maxNumTokens: 2048 } };
    })(),
    python: process.env.KILN_BENCH_PYTHON || 'python3',
  };
}
