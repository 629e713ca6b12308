// Shared by the executor tests: real engines built into a temporary folder, seeded prompts.
import * as path from 'node:path';
import { buildEngine, type BuildConfig } from '@kiln/builder';
import { convertCheckpoint } from '@kiln/convert';
import { Engine, type EngineLoadOptions } from '@kiln/runtime';

export const llamaFixture = path.resolve(__dirname, '..', '..', '..', 'fixtures', 'hf-tiny', 'llama');

/** Converts and builds `modelDir` into `<tmpDir>/<name>`; returns the engine folder. */
export async function makeEngine(
  tmpDir: string,
  modelDir: string,
  name: string,
  dtype: 'float32' | undefined,
  config: Partial<BuildConfig>,
): Promise<string> {
  const checkpointDir = path.join(tmpDir, `${name}-checkpoint`);
  const outputDir = path.join(tmpDir, name);
  await convertCheckpoint({ modelDir, outputDir: checkpointDir, dtype });
  await buildEngine({ checkpointDir, outputDir, config });
  return outputDir;
}

export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function prompts(seed: number, count: number, vocab: number, minLen: number, maxLen: number): number[][] {
  const random = rng(seed);
  return Array.from({ length: count }, () => {
    const length = minLen + Math.floor(random() * (maxLen - minLen + 1));
    return Array.from({ length }, () => 3 + Math.floor(random() * (vocab - 3)));
  });
}

export async function withEngine<T>(dir: string, options: EngineLoadOptions, body: (engine: Engine) => Promise<T>): Promise<T> {
  const engine = await Engine.load(dir, { numThreads: 2, ...options });
  try {
    return await body(engine);
  } finally {
    await engine.executor.shutdown();
    engine.dispose();
  }
}
