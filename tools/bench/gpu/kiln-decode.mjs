// Kiln's batch-1 decode, in this process: decode ms/token = (time of N new tokens - time of 1) / (N - 1),
// after a warm-up, median of 3. The engine as shipped, then (diagnostics) with its decode features
// switched off one by one through the switches read when an engine loads: CUDA graphs
// (KILN_CUDA_GRAPHS=0), then also the GEMV (KILN_CUDA_GEMV=0); then where a decode step goes (the per-op
// profile, KILN_CUDA_PROFILE=1, printed to stderr on dispose; the step timing, KILN_CUDA_STEP_TIMING=1);
// sampling on the host instead of the device (KILN_CUDA_SAMPLING=host); and at a long context, split-K
// decode attention at two split sizes and off (KILN_CUDA_ATTENTION_SPLIT_KEYS).
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const { Engine } = createRequire(path.join(root, 'package.json'))('@kiln/runtime');

const SWITCHES = ['KILN_CUDA_FUSED_LINEAR', 'KILN_CUDA_GRAPHS', 'KILN_CUDA_GEMV', 'KILN_CUDA_PROFILE', 'KILN_CUDA_STEP_TIMING', 'KILN_CUDA_SAMPLING', 'KILN_CUDA_ATTENTION_SPLIT_KEYS'];
const seconds = (t0) => Number(process.hrtime.bigint() - t0) / 1e9;

function withSwitches(env) {
  for (const name of SWITCHES) delete process.env[name];
  Object.assign(process.env, env);
}

export const DIAGNOSTIC_MODES = [
  { name: 'neighbours of each linear as separate kernels', env: { KILN_CUDA_FUSED_LINEAR: '0' } },
  { name: 'without CUDA graphs', env: { KILN_CUDA_GRAPHS: '0' } },
  { name: 'without graphs or GEMV (cuBLASLt only)', env: { KILN_CUDA_GRAPHS: '0', KILN_CUDA_GEMV: '0' } },
  { name: 'sampling on the host (logits copied)', env: { KILN_CUDA_SAMPLING: 'host' } },
];

/** Batch-1 decode at a long context: split-K attention as shipped, from 64 keys a split, and off. */
export const LONG_CONTEXT_MODES = [
  { name: 'as shipped', env: {} },
  { name: 'split-K from 64 keys a split', env: { KILN_CUDA_ATTENTION_SPLIT_KEYS: '64' } },
  { name: 'without split-K attention', env: { KILN_CUDA_ATTENTION_SPLIT_KEYS: '0' } },
];

/** One mode: load, warm up, 3 x (1 token, N tokens); the median run by decode ms/token. */
export async function measureDecode(engineDir, prompt, newTokens, env, log) {
  withSwitches(env);
  try {
    const t0 = process.hrtime.bigint();
    const engine = await Engine.load(engineDir);
    const { info } = engine;
    log(`load ${seconds(t0).toFixed(1)} s; ${info.device}; weights ${(info.weightBytes / 2 ** 20).toFixed(0)} MiB, KV ${(info.kvCacheBytes / 2 ** 20).toFixed(0)} MiB`);
    const generate = async (maxTokens) => {
      const start = process.hrtime.bigint();
      const result = await engine.generate(prompt, { maxTokens, ignoreEos: true });
      return { seconds: seconds(start), ids: Array.from(result.outputIds) };
    };
    try {
      await generate(8); // warm-up: plans, allocations, graph capture
      const runs = [];
      for (let r = 0; r < 3; r++) {
        const one = await generate(1);
        const full = await generate(newTokens);
        if (full.ids.length !== newTokens) throw new Error(`kiln generated ${full.ids.length} tokens, not ${newTokens}`);
        runs.push({ firstTokenMs: one.seconds * 1e3, msPerToken: ((full.seconds - one.seconds) * 1e3) / (newTokens - 1), ids: full.ids });
      }
      const sorted = [...runs].sort((a, b) => a.msPerToken - b.msPerToken);
      return { ...sorted[1], allRunsMsPerToken: runs.map((r) => r.msPerToken), weightBytes: info.weightBytes, kvCacheBytes: info.kvCacheBytes, device: info.device };
    } finally {
      await engine.dispose();
    }
  } finally {
    withSwitches({});
  }
}

/** The per-op profile (to stderr, on dispose) of 64 decode steps, graphs off. */
export async function profileDecode(engineDir, prompt) {
  withSwitches({ KILN_CUDA_PROFILE: '1' });
  try {
    const engine = await Engine.load(engineDir);
    try {
      await engine.generate(prompt, { maxTokens: 64, ignoreEos: true });
    } finally {
      await engine.dispose();
    }
  } finally {
    withSwitches({});
  }
}

/** Where a shipped decode step's wall time goes: the executor's iteration vs the wall time per token. */
export async function stepTiming(engineDir, prompt, newTokens) {
  withSwitches({ KILN_CUDA_STEP_TIMING: '1' });
  try {
    const engine = await Engine.load(engineDir);
    try {
      const start = process.hrtime.bigint();
      await engine.generate(prompt, { maxTokens: newTokens, ignoreEos: true });
      const wallMsPerToken = Number(process.hrtime.bigint() - start) / 1e6 / newTokens;
      const iterations = engine.executor.stats().recentIterations.filter((it) => it.numContextTokens === 0 && it.numGenerationTokens === 1);
      const iterationMs = iterations.reduce((sum, it) => sum + it.iterationMs, 0) / Math.max(1, iterations.length);
      return { wallMsPerToken, iterationMs, decodeIterations: iterations.length };
    } finally {
      await engine.dispose();
    }
  } finally {
    withSwitches({});
  }
}
