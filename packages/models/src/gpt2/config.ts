import { HfConfig, optionalBoolean, optionalString, requireInteger } from '../hf-config';
import type { DecoderConfig } from '../common/decoder';
import { parseActivation } from '../common/activation';
import { headDimOf, readEps, readIntegerKey, requireSetting } from '../common/config';

/**
 * GPT-2: learned absolute positions, pre-LayerNorm blocks, a 4x non-gated MLP (gelu_new), biases
 * everywhere, tied LM head. Attention is scaled by 1/sqrt(head_dim) when scale_attn_weights (default),
 * and further by 1/(layer + 1) when scale_attn_by_inverse_layer_idx.
 */
export function parseGpt2Config(config: HfConfig, file: string): DecoderConfig {
  const hiddenSize = readIntegerKey(config, file, ['n_embd', 'hidden_size']);
  const numHeads = readIntegerKey(config, file, ['n_head', 'num_attention_heads']);
  const numLayers = readIntegerKey(config, file, ['n_layer', 'num_hidden_layers']);
  const maxPositions = readIntegerKey(config, file, ['n_positions', 'max_position_embeddings']);
  const headDim = headDimOf(hiddenSize, numHeads, file, 'n_head');
  requireSetting(config, 'add_cross_attention', file, false, false, 'cross-attention needs an encoder');
  return {
    vocabSize: requireInteger(config, 'vocab_size', file),
    maxPositionEmbeddings: maxPositions,
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads: numHeads,
    headDim,
    norm: { kind: 'layer', eps: readEps(config, file, ['layer_norm_epsilon'], 1e-5) },
    learnedPositions: { tableSize: maxPositions, offset: 0 },
    attention: {
      qkvBias: true,
      denseBias: true,
      scale: optionalBoolean(config, 'scale_attn_weights', file, true) ? 1 / Math.sqrt(headDim) : 1,
      scaleByInverseLayer: optionalBoolean(config, 'scale_attn_by_inverse_layer_idx', file, false),
      slidingWindows: new Array<number>(numLayers).fill(0),
      rotary: null,
    },
    mlp: {
      kind: 'plain',
      activation: parseActivation(optionalString(config, 'activation_function', file, 'gelu_new'), 'activation_function', file),
      intermediateSize: readIntegerKey(config, file, ['n_inner'], 4 * hiddenSize),
      bias: true,
    },
    residual: 'sequential',
    tieWordEmbeddings: optionalBoolean(config, 'tie_word_embeddings', file, true),
    lmHeadBias: false,
  };
}
