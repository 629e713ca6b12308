import { ConfigError, type HfConfig, optionalInteger, optionalNumber, readRope, requireInteger } from '@kiln/models';
import type { RopeScaling } from '@kiln/core';

/**
 * TinyLlama's model config: what the network and the checkpoint plan need, in Kiln's camelCase. It is
 * stored in the Kiln checkpoint's config.json, so it must be plain JSON (no functions, no classes).
 */
export interface TinyLlamaConfig {
  vocabSize: number;
  maxPositionEmbeddings: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling;
}

/** Reads the HF config.json; every problem names the file and the key (ConfigError). */
export function parseTinyLlamaConfig(config: HfConfig, file: string): TinyLlamaConfig {
  const hiddenSize = requireInteger(config, 'hidden_size', file);
  const numHeads = requireInteger(config, 'num_attention_heads', file);
  const numKvHeads = optionalInteger(config, 'num_key_value_heads', file, numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw new ConfigError(file, 'num_key_value_heads', `${numKvHeads} does not divide num_attention_heads ${numHeads}`);
  }
  if (config.hidden_act !== undefined && config.hidden_act !== 'silu') {
    throw new ConfigError(file, 'hidden_act', `"${String(config.hidden_act)}" is not supported (expected "silu")`);
  }
  for (const key of ['attention_bias', 'mlp_bias', 'tie_word_embeddings']) {
    if (config[key] === true) throw new ConfigError(file, key, 'true is not supported by TinyLlama');
  }
  const rope = readRope(config, file);
  return {
    vocabSize: requireInteger(config, 'vocab_size', file),
    maxPositionEmbeddings: optionalInteger(config, 'max_position_embeddings', file, 2048),
    hiddenSize,
    intermediateSize: requireInteger(config, 'intermediate_size', file),
    numLayers: requireInteger(config, 'num_hidden_layers', file),
    numHeads,
    numKvHeads,
    headDim: optionalInteger(config, 'head_dim', file, hiddenSize / numHeads),
    rmsNormEps: optionalNumber(config, 'rms_norm_eps', file, 1e-6),
    ropeTheta: rope.theta,
    ropeScaling: rope.scaling,
  };
}
