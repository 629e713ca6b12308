import { HfConfig, optionalBoolean, optionalString, requireInteger } from '../hf-config';
import type { DecoderConfig } from '../common/decoder';
import { parseActivation } from '../common/activation';
import { headDimOf, readEps, readIntegerKey, requireSetting } from '../common/config';

export interface GptBigCodeConfig extends DecoderConfig {
  multiQuery: boolean;
}

/**
 * GPTBigCode (SantaCoder, StarCoder 1): GPT-2's block (learned positions, LayerNorm, 4x MLP, biases,
 * tied head) with nn.Linear weights and multi-query attention (one kv head) when `multi_query`.
 */
export function parseGptBigCodeConfig(config: HfConfig, file: string): GptBigCodeConfig {
  const hiddenSize = readIntegerKey(config, file, ['n_embd', 'hidden_size']);
  const numHeads = readIntegerKey(config, file, ['n_head', 'num_attention_heads']);
  const numLayers = readIntegerKey(config, file, ['n_layer', 'num_hidden_layers']);
  const maxPositions = readIntegerKey(config, file, ['n_positions', 'max_position_embeddings']);
  const headDim = headDimOf(hiddenSize, numHeads, file, 'n_head');
  const multiQuery = optionalBoolean(config, 'multi_query', file, true);
  requireSetting(config, 'add_cross_attention', file, false, false, 'cross-attention needs an encoder');
  return {
    vocabSize: requireInteger(config, 'vocab_size', file),
    maxPositionEmbeddings: maxPositions,
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads: multiQuery ? 1 : numHeads,
    headDim,
    norm: { kind: 'layer', eps: readEps(config, file, ['layer_norm_epsilon'], 1e-5) },
    learnedPositions: { tableSize: maxPositions, offset: 0 },
    attention: {
      qkvBias: true,
      denseBias: true,
      scale: optionalBoolean(config, 'scale_attn_weights', file, true) ? 1 / Math.sqrt(headDim) : 1,
      slidingWindows: new Array<number>(numLayers).fill(0),
      rotary: null,
    },
    mlp: {
      kind: 'plain',
      activation: parseActivation(optionalString(config, 'activation_function', file, 'gelu_pytorch_tanh'), 'activation_function', file),
      intermediateSize: readIntegerKey(config, file, ['n_inner'], 4 * hiddenSize),
      bias: true,
    },
    residual: 'sequential',
    tieWordEmbeddings: optionalBoolean(config, 'tie_word_embeddings', file, true),
    lmHeadBias: false,
    multiQuery,
  };
}
