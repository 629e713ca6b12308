import { HfConfig, optionalBoolean, optionalInteger, optionalString, readRope, requireInteger } from '../hf-config';
import { ConfigError } from '../registry';
import type { DecoderConfig } from '../common/decoder';
import { parseActivation } from '../common/activation';
import { headDimOf, readEps, readPartialRotaryFactor, rotaryDimFor } from '../common/config';

/**
 * Phi (1, 1.5, 2): attention and MLP side by side over one input LayerNorm (x + attn(n(x)) + mlp(n(x))),
 * RoPE on the first partial_rotary_factor of each head, biases on every linear including the LM head.
 */
export function parsePhiConfig(config: HfConfig, file: string): DecoderConfig {
  const hiddenSize = requireInteger(config, 'hidden_size', file);
  const numHeads = requireInteger(config, 'num_attention_heads', file);
  const numKvHeads = optionalInteger(config, 'num_key_value_heads', file, numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw new ConfigError(file, 'num_key_value_heads', `${numKvHeads} does not divide num_attention_heads ${numHeads}`);
  }
  const numLayers = requireInteger(config, 'num_hidden_layers', file);
  const headDim = headDimOf(hiddenSize, numHeads, file, 'num_attention_heads');
  if (optionalBoolean(config, 'qk_layernorm', file, false)) {
    throw new ConfigError(file, 'qk_layernorm', 'true is not supported (per-head LayerNorm of q and k)');
  }
  const rope = readRope(config, file);
  const factor = readPartialRotaryFactor(config, file, 0.5);
  return {
    vocabSize: requireInteger(config, 'vocab_size', file),
    maxPositionEmbeddings: optionalInteger(config, 'max_position_embeddings', file, 2048),
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    norm: { kind: 'layer', eps: readEps(config, file, ['layer_norm_eps'], 1e-5) },
    attention: {
      qkvBias: true,
      denseBias: true,
      slidingWindows: new Array<number>(numLayers).fill(0),
      rotary: {
        theta: rope.theta,
        scaling: rope.scaling,
        rotaryDim: rotaryDimFor(headDim, factor, file, 'partial_rotary_factor'),
        interleaved: false,
      },
    },
    mlp: {
      kind: 'plain',
      activation: parseActivation(optionalString(config, 'hidden_act', file, 'gelu_new'), 'hidden_act', file),
      intermediateSize: requireInteger(config, 'intermediate_size', file),
      bias: true,
    },
    residual: 'parallel-shared-norm',
    tieWordEmbeddings: optionalBoolean(config, 'tie_word_embeddings', file, false),
    lmHeadBias: true,
  };
}
