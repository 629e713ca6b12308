import { loadNative } from '@kiln/native';
import type { BaseModelConfig } from '@kiln/models';
import type { BuildConfig } from './types';

function checkInteger(name: keyof BuildConfig, value: number, min: number, max: number): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new RangeError(`build config: ${name} must be an integer in [${min}, ${max}], got ${value}`);
  }
  return value;
}

/** Fills defaults (documented on BuildConfig) and validates ranges, naming the field at fault. */
export function resolveBuildConfig(partial: Partial<BuildConfig> = {}, model: BaseModelConfig): BuildConfig {
  const maxSeqLen = checkInteger('maxSeqLen', partial.maxSeqLen ?? Math.min(model.maxPositionEmbeddings, 4096), 2, 1 << 20);
  const isa = partial.isa ?? loadNative().cpuInfo().isa;
  if (isa !== 'avx2' && isa !== 'generic') throw new RangeError(`build config: isa must be "avx2" or "generic", got ${String(isa)}`);
  const maxBatchSize = checkInteger('maxBatchSize', partial.maxBatchSize ?? 8, 1, 4096);
  return {
    maxBatchSize,
    maxSeqLen,
    maxNumTokens: checkInteger('maxNumTokens', partial.maxNumTokens ?? Math.min(maxSeqLen, 2048), 1, 1 << 20),
    gatherContextLogits: Boolean(partial.gatherContextLogits ?? false),
    maxBeamWidth: checkInteger('maxBeamWidth', partial.maxBeamWidth ?? 1, 1, maxBatchSize),
    tokensPerBlock: checkInteger('tokensPerBlock', partial.tokensPerBlock ?? 16, 1, 1024),
    isa,
  };
}
