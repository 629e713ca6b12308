import type { Network } from '@kiln/core';

/** Weight storage types of a Kiln checkpoint. */
export type CheckpointDType = 'float32' | 'float16' | 'bfloat16';

/** Where one tensor of a Kiln checkpoint comes from in the Hugging Face checkpoint. */
export interface HfTensorSource {
  /** Tensor name in the HF safetensors files. */
  tensor: string;
  /** The shape the HF tensor must have; conversion fails naming the tensor and both shapes otherwise. */
  shape: number[];
  /** Transpose a 2-D tensor first (GPT-2's Conv1D stores [in, out]). */
  transpose?: boolean;
  /** Take rows [rowStart, rowStart + rowCount) of dimension 0 (after any transpose). */
  rowStart?: number;
  rowCount?: number;
}

/** One tensor of a Kiln checkpoint: its canonical name, shape, and the HF tensors concatenated (dim 0) into it. */
export interface CheckpointTensorPlan {
  name: string;
  shape: number[];
  sources: HfTensorSource[];
}

/** Token ids from the HF config / generation config. */
export interface GenerationIds {
  bosTokenId: number | null;
  /** One or several end ids (HF allows a list). */
  eosTokenIds: number[];
  padTokenId: number | null;
}

/**
 * The `config.json` of a Kiln checkpoint: what @kiln/convert writes and @kiln/builder reads. `model` is
 * the architecture's own config (camelCase), produced by its `parseConfig`.
 */
export interface KilnCheckpointConfig<M = Record<string, unknown>> {
  format: 'kiln-checkpoint';
  formatVersion: 1;
  /** The HF class name, e.g. "LlamaForCausalLM"; the registry key. */
  architecture: string;
  dtype: CheckpointDType;
  /** Parallel mapping fixed at conversion time (one rank for now). */
  mapping: { worldSize: number; tpSize: number; ppSize: number };
  model: M;
  generation: GenerationIds;
}

/** What every architecture's model config has, whatever its family. */
export interface BaseModelConfig {
  vocabSize: number;
  maxPositionEmbeddings: number;
}

/**
 * An architecture: how to read its HF config, which tensors its Kiln checkpoint has (and where they come
 * from in the HF checkpoint), and its network. Register one with `registerArchitecture`.
 */
export interface ArchitectureDefinition<M extends BaseModelConfig = BaseModelConfig> {
  /** The HF `architectures[0]` class name it handles, e.g. "LlamaForCausalLM". */
  name: string;
  /** Family folder, e.g. "llama". */
  family: string;
  /**
   * Maps a parsed HF `config.json` to this architecture's model config. Throws `ConfigError` naming
   * `source` (the file) and the key at fault when a required key is missing or a value is invalid.
   */
  parseConfig(hfConfig: Record<string, unknown>, source: string): M;
  /** The Kiln checkpoint's tensors, in a stable order, with their HF sources. */
  checkpointTensors(config: M): CheckpointTensorPlan[];
  /**
   * HF tensors that may be present without being converted (e.g. `lm_head.weight` of a tied model, rotary
   * buffers). Any other unused HF tensor fails the conversion.
   */
  ignoredTensors?: RegExp[];
  /** The network, its parameters named as the checkpoint's tensors. */
  buildNetwork(config: M): Network;
}
