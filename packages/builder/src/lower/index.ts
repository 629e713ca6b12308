import type { Graph } from '../graph';
import { lowerGelu, lowerSoftcap } from './activations';
import { lowerAttention } from './attention';
import { lowerCollective } from './collectives';
import { lowerVocabParallelEmbedding } from './vocab-parallel-embedding';
import { lowerElementwise } from './elementwise';
import { lowerEmbedding } from './embedding';
import { lowerGatherRows } from './gather-rows';
import { lowerAddLayerNorm, lowerLayerNorm } from './layer-norm';
import { lowerLinear } from './linear';
import { lowerMoe } from './moe';
import { lowerPositionEmbedding } from './position-embedding';
import { lowerAddRmsNorm, lowerRmsNorm } from './rms-norm';
import { lowerRope } from './rope';
import type { LoweredOp, Lowering, LoweringContext, WeightEntry } from './types';

export type { LoweredOp, Lowering, WeightEntry } from './types';

/** CPU lowerings by graph op. `slice` has none: it becomes a view in the memory plan. */
const cpuLowerings = new Map<string, Lowering>([
  ['embedding', lowerEmbedding],
  ['linear', lowerLinear],
  ['rms_norm', lowerRmsNorm],
  ['add', lowerElementwise],
  ['mul', lowerElementwise],
  ['silu', lowerElementwise],
  ['swiglu', lowerElementwise],
  ['rope', lowerRope],
  ['attention', lowerAttention],
  ['gather_rows', lowerGatherRows],
  ['layer_norm', lowerLayerNorm],
  ['gelu', lowerGelu],
  ['geglu', lowerGelu],
  ['relu', lowerElementwise],
  ['softcap', lowerSoftcap],
  ['position_embedding', lowerPositionEmbedding],
  ['moe', lowerMoe],
  ['add_rms_norm', lowerAddRmsNorm],
  ['add_layer_norm', lowerAddLayerNorm],
  ['all_reduce', lowerCollective],
  ['all_gather', lowerCollective],
  ['send', lowerCollective],
  ['recv', lowerCollective],
  ['vocab_parallel_embedding', lowerVocabParallelEmbedding],
]);

export function registerCpuLowering(op: string, lowering: Lowering): void {
  cpuLowerings.set(op, lowering);
}

export interface LoweredProgram {
  ops: LoweredOp[];
  weights: WeightEntry[];
  /** Column views made by `slice`: view value id -> the value it slices and where. */
  views: Map<number, { of: number; colOffset: number }>;
}

/**
 * int4 builds keep these matrices at int8 (decision 0014): the LM head, as TensorRT-LLM's weight-only
 * modes leave it unquantized and llama.cpp's Q4 presets store output.weight as Q6_K, and the first
 * transformer layer's linears, as llama.cpp's Q4_K_M spends more bits on its first layers. Measured on
 * scribe-7m (perplexity over Ruth, int4 group 32): all int4 +38.6%; the first layer at int8 +21.3% (any
 * other single layer: +32.0% to +37.2%); the LM head too +20.4%. On a 22-layer 1.1B model they add 1/22
 * of the layers' bytes at twice the bits and the LM head's (about 7% more bytes than all-int4).
 */
export function int4KeptAtInt8(name: string, lmHead: boolean): boolean {
  return lmHead || /(^|\.)layers\.0\./.test(name);
}

/** The storage dtype of a quantizable matrix of this shape (int4: decision 0014; fp8: decision 0015; q8_0: decision 0016). */
function quantizedDType(
  quantization: 'int8' | 'int4' | 'fp8' | 'q8_0',
  shape: readonly number[],
  lmHead: boolean,
  name: string,
): 'int8' | 'int4' | 'float8_e4m3fn' | 'q8_0' | undefined {
  // int8 quantizes the LM head too (as llama.cpp's Q8_0 files do); int4 checks K (lowerGraph).
  if (quantization === 'int8') return quantization;
  if (quantization === 'int4') return int4KeptAtInt8(name, lmHead) ? 'int8' : 'int4';
  // q8_0 blocks run along a row of 32 inputs: a matrix of another width keeps the weight dtype (as
  // llama.cpp's converter keeps it 16-bit). The LM head is quantized too, as in a GGUF Q8_0/Q4_0 file.
  if (quantization === 'q8_0') return shape.length === 2 && shape[1] % 32 === 0 ? 'q8_0' : undefined;
  // The LM head stays in the weight dtype, as TensorRT-LLM's FP8 recipes leave it: e4m3's 3 mantissa bits
  // on the last matrix go straight into the logits.
  return !lmHead && shape.length === 2 && shape[1] % 16 === 0 ? 'float8_e4m3fn' : undefined;
}

/**
 * Lowers every node; `weightDType` is the engine's weight dtype (the build's `dtype`): parameters are
 * packed in it, except those a lowering asks to keep in float32 (biases), and linear matrices when
 * `options.quantization` is 'int8' (the writer quantizes them per row), 'int4' (per row and group of
 * `options.groupSize` input features: each matrix's K must be a multiple of it), 'fp8' (float8_e4m3fn, one
 * scale per matrix; matrices whose K is not a multiple of 16, which cuBLASLt's FP8 GEMM needs, keep the
 * weight dtype on every target so cpu and cuda engines stay alike) or 'q8_0' (llama.cpp's blocks of 32
 * inputs; matrices whose K is not a multiple of 32 keep the weight dtype). `options.bf16LinearInputs`:
 * linears read their input rounded to bfloat16.
 */
export function lowerGraph(
  graph: Graph,
  weightDType: 'float32' | 'float16' | 'bfloat16',
  options: { quantization?: 'int8' | 'int4' | 'fp8' | 'q8_0'; groupSize?: number; bf16LinearInputs?: boolean } = {},
): LoweredProgram {
  const { quantization, groupSize = 32 } = options;
  const weights: WeightEntry[] = [];
  const weightIndex = new Map<string, number>();
  const views = new Map<number, { of: number; colOffset: number }>();

  const context: LoweringContext = {
    graph,
    bf16LinearInputs: options.bf16LinearInputs === true,
    llamaCppNumerics: quantization === 'q8_0',
    parameter(id, options = {}) {
      const value = graph.value(id);
      if (value.kind !== 'parameter' || !value.sources) throw new Error(`lowering: %${id} is not a parameter`);
      const name = value.name ?? `%${id}`;
      const dtype = options.float32 ? 'float32' : options.quantizable && quantization ? (quantizedDType(quantization, value.shape as number[], options.lmHead === true, name) ?? weightDType) : weightDType;
      const key = `${name}:${dtype}`;
      let index = weightIndex.get(key);
      if (index === undefined && dtype === 'int4') {
        const [N, K] = value.shape as number[];
        if (value.shape.length !== 2 || K % groupSize !== 0) {
          throw new Error(
            `int4 quantization: "${name}" [${value.shape.join(', ')}] has ${K} input features, not a multiple of the group size ${groupSize} ` +
              '(build with a --group-size that divides it, or without int4)',
          );
        }
        index = weights.push({ name, dtype, shape: [N, K], sources: value.sources, groupSize }) - 1;
        weightIndex.set(key, index);
      }
      if (index === undefined) {
        index = weights.push({ name, dtype: dtype as Exclude<typeof dtype, 'int4'>, shape: value.shape as number[], sources: value.sources }) - 1;
        weightIndex.set(key, index);
      }
      return index;
    },
    constant(name, data) {
      const values = Float32Array.from(data);
      const key = `const:${Buffer.from(values.buffer).toString('base64')}`;
      let index = weightIndex.get(key);
      if (index === undefined) {
        const unique = `${name}.${weights.filter((w) => w.name.startsWith(`${name}.`)).length}`;
        index = weights.push({ name: unique, dtype: 'float32', shape: [values.length], data: values }) - 1;
        weightIndex.set(key, index);
      }
      return index;
    },
    expectGraphInput(id, name, op) {
      if (graph.inputs[name] !== id) throw new Error(`lowering: ${op} must read the graph input "${name}" directly`);
    },
  };

  const ops: LoweredOp[] = [];
  for (const node of graph.nodes) {
    if (node.op === 'slice') {
      const root = views.get(node.inputs[0]);
      const colOffset = Number(node.attrs.colOffset) + (root?.colOffset ?? 0);
      views.set(node.outputs[0], { of: root?.of ?? node.inputs[0], colOffset });
      continue;
    }
    const lowering = cpuLowerings.get(node.op);
    if (!lowering) throw new Error(`lowering: no CPU lowering for op "${node.op}"`);
    ops.push(...lowering(node, context));
  }
  return { ops, weights, views };
}
