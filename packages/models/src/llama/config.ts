import type { RopeScaling } from '@kiln/core';
import { readEps } from '../common/config';
import { ConfigError } from '../registry';
import {
  HfConfig,
  optionalBoolean,
  optionalInteger,
  optionalNumber,
  optionalString,
  readRope,
  requireInteger,
} from '../hf-config';

/** The LLaMA family's model config (Llama 1/2/3, Mistral, Qwen2): a decoder of RMSNorm, RoPE, GQA, SwiGLU. */
export interface LlamaConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  maxPositionEmbeddings: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling;
  /** Biases on the q, k and v projections (Qwen2; Llama's attention_bias). */
  qkvBias: boolean;
  /** Bias on the output projection (Llama's attention_bias; not Qwen2). */
  outputBias: boolean;
  mlpBias: boolean;
  tieWordEmbeddings: boolean;
  /** Per layer: the sliding attention window, or 0 for full attention. */
  slidingWindows: number[];
}

/** What differs between the family's members when reading their HF configs. */
export interface LlamaVariant {
  /** Qwen2 always has q/k/v biases and no output bias. */
  qkvBiasAlways?: boolean;
  /** How the member decides which layers use a sliding window. */
  slidingWindow: 'none' | 'all-layers' | 'qwen2';
  defaultRmsNormEps: number;
}

export function parseLlamaConfig(config: HfConfig, file: string, variant: LlamaVariant): LlamaConfig {
  const hiddenSize = requireInteger(config, 'hidden_size', file);
  const numHeads = requireInteger(config, 'num_attention_heads', file);
  const numKvHeads = optionalInteger(config, 'num_key_value_heads', file, numHeads);
  const numLayers = requireInteger(config, 'num_hidden_layers', file);
  if (numHeads % numKvHeads !== 0) {
    throw new ConfigError(file, 'num_key_value_heads', `${numKvHeads} does not divide num_attention_heads ${numHeads}`);
  }
  if (config.head_dim === undefined && hiddenSize % numHeads !== 0) {
    throw new ConfigError(file, 'hidden_size', `${hiddenSize} is not a multiple of num_attention_heads ${numHeads}`);
  }
  const headDim = optionalInteger(config, 'head_dim', file, hiddenSize / numHeads);
  const activation = optionalString(config, 'hidden_act', file, 'silu');
  if (activation !== 'silu') throw new ConfigError(file, 'hidden_act', `"${activation}" is not supported (expected "silu")`);
  const rope = readRope(config, file);
  const attentionBias = optionalBoolean(config, 'attention_bias', file, false);

  return {
    vocabSize: requireInteger(config, 'vocab_size', file),
    hiddenSize,
    intermediateSize: requireInteger(config, 'intermediate_size', file),
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    maxPositionEmbeddings: optionalInteger(config, 'max_position_embeddings', file, 2048),
    // Checked > 0 here, at conversion: -1 used to pass convert and build and fail only at generate.
    rmsNormEps: readEps(config, file, ['rms_norm_eps'], variant.defaultRmsNormEps),
    ropeTheta: rope.theta,
    ropeScaling: rope.scaling,
    qkvBias: variant.qkvBiasAlways ? true : attentionBias,
    outputBias: variant.qkvBiasAlways ? false : attentionBias,
    mlpBias: optionalBoolean(config, 'mlp_bias', file, false),
    tieWordEmbeddings: optionalBoolean(config, 'tie_word_embeddings', file, false),
    slidingWindows: slidingWindows(config, file, variant, numLayers),
  };
}

function slidingWindows(config: HfConfig, file: string, variant: LlamaVariant, numLayers: number): number[] {
  const none = new Array<number>(numLayers).fill(0);
  if (variant.slidingWindow === 'none') return none;
  const window = config.sliding_window;
  if (window === undefined || window === null) return none;
  const size = optionalInteger(config, 'sliding_window', file, 0);
  if (variant.slidingWindow === 'all-layers') return none.map(() => size);
  // Qwen2: `use_sliding_window` switches it on for layers from `max_window_layers` up, unless the
  // config spells the layers out in `layer_types` (transformers 5).
  if (!optionalBoolean(config, 'use_sliding_window', file, false)) return none;
  const layerTypes = config.layer_types;
  if (Array.isArray(layerTypes)) {
    if (layerTypes.length !== numLayers) {
      throw new ConfigError(file, 'layer_types', `has ${layerTypes.length} entries for ${numLayers} layers`);
    }
    return layerTypes.map((type) => (type === 'sliding_attention' ? size : 0));
  }
  const first = optionalInteger(config, 'max_window_layers', file, numLayers, 0);
  return none.map((_, layer) => (layer >= first ? size : 0));
}
