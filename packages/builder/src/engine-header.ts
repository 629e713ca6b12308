// Assembles the engine header (docs/engine-format.md) from the lowered program and its memory plan.
import type { EngineWeightSpec, WeightDType } from '@kiln/native';
import type { KilnCheckpointConfig } from '@kiln/models';
import type { LoweredProgram } from './lower';
import type { MemoryPlan } from './memory-plan';
import type { BuildConfig } from './types';

export const ENGINE_FORMAT_VERSION = 1;

const ELEMENT_BYTES = { float32: 4, float16: 2, bfloat16: 2, int8: 1, float8_e4m3fn: 1, q8_0: 1 } as const;
const align64 = (n: number) => Math.ceil(n / 64) * 64;

/** What the engine runs on: the native loader picks the backend (and refuses one it cannot run) by it. */
export type EngineTarget =
  | { backend: 'cpu'; isa: 'avx2' | 'generic' }
  | { backend: 'cuda'; computeCapability: string; activationDType: WeightDType };

export interface EngineHeader {
  format: 'kiln-engine';
  formatVersion: number;
  target: EngineTarget;
  limits: { maxBatchSize: number; maxSeqLen: number; maxNumTokens: number; maxLogitRows: number; maxBeamWidth: number };
  model: Record<string, unknown>;
  kvCache: { numLayers: number; numKvHeads: number; headDim: number; tokensPerBlock: number };
  arena: { bytes: number };
  values: MemoryPlan['values'];
  /** Absent on ranks other than 0 of a pipeline that compute no logits. */
  outputs: { logits?: number };
  /** Tensor/pipeline-parallel engines only: this file's rank (rank = ppRank * tpSize + tpRank). */
  mapping?: { tpSize: number; ppSize: number; rank: number };
  /** groupSize: int4 weights only (input features per scale). */
  weights: Array<{ name: string; dtype: string; shape: number[]; groupSize?: number; offset: number; byteLength: number }>;
  ops: Array<{ op: string; inputs: number[]; outputs: number[]; weights: Record<string, number>; attrs: Record<string, number | boolean | string> }>;
}

export function assembleEngine(
  program: LoweredProgram,
  plan: MemoryPlan,
  logitsValue: number | undefined,
  buildConfig: BuildConfig,
  checkpoint: KilnCheckpointConfig,
  weightsFile: string,
  mapping?: { tpSize: number; ppSize: number; rank: number },
): { header: EngineHeader; weights: EngineWeightSpec[] } {
  const attention = program.ops.filter((op) => op.op === 'attention');
  if (attention.length === 0) throw new Error('build: the network has no attention op, so no KV cache layout');
  const { numKvHeads, headDim } = attention[0].attrs as { numKvHeads: number; headDim: number };
  for (const op of attention) {
    if (op.attrs.numKvHeads !== numKvHeads || op.attrs.headDim !== headDim) {
      throw new Error('build: attention layers differ in numKvHeads/headDim; the KV cache needs one shape');
    }
  }

  let offset = 0;
  const weights: EngineHeader['weights'] = [];
  const specs: EngineWeightSpec[] = [];
  for (const entry of program.weights) {
    // int8 matrices [N, K] carry N float32 row scales after their codes; FP8 matrices one float32 scale;
    // int4 matrices are K / 2 bytes a row, then N * K / groupSize bfloat16 scales (native/src/kiln/dtype.h);
    // q8_0 matrices are blocks of a float16 scale and 32 codes (34 bytes per 32 elements).
    const elements = entry.shape.reduce((a, b) => a * b, 1);
    const byteLength =
      entry.dtype === 'int4'
        ? elements / 2 + 2 * (elements / entry.groupSize)
        : entry.dtype === 'q8_0'
          ? (elements / 32) * 34
          : elements * ELEMENT_BYTES[entry.dtype] + (entry.dtype === 'int8' ? 4 * entry.shape[0] : entry.dtype === 'float8_e4m3fn' ? 4 : 0);
    const groupSize = entry.dtype === 'int4' ? { groupSize: entry.groupSize } : {};
    weights.push({ name: entry.name, dtype: entry.dtype, shape: entry.shape, ...groupSize, offset, byteLength });
    offset = align64(offset + byteLength);
    specs.push(
      'data' in entry
        ? { name: entry.name, dtype: 'float32', shape: entry.shape, data: entry.data }
        : { name: entry.name, dtype: entry.dtype, shape: entry.shape, ...groupSize, sources: entry.sources.map((tensor) => ({ file: weightsFile, tensor })) },
    );
  }

  const valueIndex = (id: number) => {
    const index = plan.index.get(id);
    if (index === undefined) throw new Error(`build: value %${id} has no place in the memory plan`);
    return index;
  };
  const header: EngineHeader = {
    format: 'kiln-engine',
    formatVersion: ENGINE_FORMAT_VERSION,
    target: engineTarget(buildConfig),
    limits: {
      maxBatchSize: buildConfig.maxBatchSize,
      maxSeqLen: buildConfig.maxSeqLen,
      maxNumTokens: buildConfig.maxNumTokens,
      maxLogitRows: buildConfig.gatherContextLogits ? buildConfig.maxNumTokens : buildConfig.maxBatchSize,
      maxBeamWidth: buildConfig.maxBeamWidth,
    },
    model: { architecture: checkpoint.architecture, ...checkpoint.model },
    kvCache: { numLayers: Math.max(...attention.map((op) => Number(op.attrs.layer))) + 1, numKvHeads, headDim, tokensPerBlock: buildConfig.tokensPerBlock },
    arena: { bytes: plan.arenaBytes },
    values: plan.values,
    outputs: logitsValue === undefined ? {} : { logits: valueIndex(logitsValue) },
    weights,
    ...(mapping ? { mapping } : {}),
    ops: program.ops.map((op) => ({
      op: op.op,
      inputs: op.inputs.map(valueIndex),
      outputs: op.outputs.map(valueIndex),
      weights: op.weights,
      attrs: op.attrs,
    })),
  };
  return { header, weights: specs };
}

/** The header's target of a build: the CPU's ISA, or the GPU's compute capability and activation dtype. */
export function engineTarget(buildConfig: BuildConfig): EngineTarget {
  return buildConfig.target === 'cuda'
    ? { backend: 'cuda', computeCapability: buildConfig.computeCapability, activationDType: buildConfig.dtype }
    : { backend: 'cpu', isa: buildConfig.isa };
}
