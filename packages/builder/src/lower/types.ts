import type { Graph, GraphNode } from '../graph';

/** An op of the engine program, still naming graph values by id (the memory plan places them later). */
export interface LoweredOp {
  op: string;
  inputs: number[];
  outputs: number[];
  /** Slot name (e.g. "weight", "bias", "table") -> index into the weight table. */
  weights: Record<string, number>;
  attrs: Record<string, number | boolean | string>;
}

/** A weight of the engine: checkpoint tensors (concatenated along dim 0) or a constant the builder computed. */
export type WeightEntry =
  | { name: string; dtype: 'float32' | 'float16' | 'bfloat16' | 'int8' | 'float8_e4m3fn' | 'q8_0'; shape: number[]; sources: string[] }
  /** An int4 matrix [N, K]: codes in groups of `groupSize` input features, one scale each (decision 0014). */
  | { name: string; dtype: 'int4'; shape: number[]; sources: string[]; groupSize: number }
  | { name: string; dtype: 'float32'; shape: number[]; data: Float32Array };

export interface LoweringContext {
  graph: Graph;
  /** Linears read their input rounded to bfloat16 (build config bf16LinearInputs; bfloat16 weights only). */
  bf16LinearInputs: boolean;
  /**
   * llama.cpp's CPU numerics around its Q8_0 blocks (build quantization "q8_0", decision 0016): attention
   * rounds as over llama.cpp's float16 KV cache, and rope angles are computed as llama.cpp computes them.
   */
  llamaCppNumerics: boolean;
  /**
   * The weight-table index of a parameter, stored in the engine's weight dtype (or float32 when `float32`
   * is set, or int8 / int4 / float8_e4m3fn when `quantizable` is set and the build quantizes: linear matrices;
   * `lmHead` marks the matrix that makes the logits, which fp8 builds keep in the weight dtype).
   */
  parameter(id: number, options?: { float32?: boolean; quantizable?: boolean; lmHead?: boolean }): number;
  /** The weight-table index of a constant; identical constants share one entry. */
  constant(name: string, data: number[]): number;
  /** Checks that value `id` is the graph input `name` (ops that read step data instead of a buffer). */
  expectGraphInput(id: number, name: string, op: string): void;
}

/** Turns one graph node into engine ops for a backend. One file per op; registered in ./index.ts. */
export type Lowering = (node: GraphNode, context: LoweringContext) => LoweredOp[];
