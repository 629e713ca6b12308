import { HfConfig, optionalBoolean, optionalInteger, optionalString, requireInteger } from '../hf-config';
import { ConfigError } from '../registry';
import type { DecoderConfig } from '../common/decoder';
import { parseActivation } from '../common/activation';
import { headDimOf, requireSetting } from '../common/config';

/**
 * OPT: learned positions looked up at position + 2 (OPTLearnedPositionalEmbedding's offset), pre-LayerNorm
 * blocks (eps 1e-5, PyTorch's default), a ReLU MLP of ffn_dim, biases per enable_bias, tied LM head.
 * The post-LayerNorm variant (do_layer_norm_before: false, OPT-350m) and the word_embed_proj_dim
 * projections are not supported and fail naming the key.
 */
export function parseOptConfig(config: HfConfig, file: string): DecoderConfig {
  const hiddenSize = requireInteger(config, 'hidden_size', file);
  const numHeads = requireInteger(config, 'num_attention_heads', file);
  const numLayers = requireInteger(config, 'num_hidden_layers', file);
  const headDim = headDimOf(hiddenSize, numHeads, file, 'num_attention_heads');
  requireSetting(config, 'do_layer_norm_before', file, true, true, 'only pre-LayerNorm OPT models are supported');
  requireSetting(config, '_remove_final_layer_norm', file, false, false, 'the final LayerNorm is required');
  requireSetting(config, 'layer_norm_elementwise_affine', file, true, true, 'LayerNorms without weight and bias are not supported');
  const projDim = optionalInteger(config, 'word_embed_proj_dim', file, hiddenSize);
  if (projDim !== hiddenSize) {
    throw new ConfigError(file, 'word_embed_proj_dim', `${projDim} != hidden_size ${hiddenSize}: the project_in/project_out layers are not supported`);
  }
  const maxPositions = optionalInteger(config, 'max_position_embeddings', file, 2048);
  const bias = optionalBoolean(config, 'enable_bias', file, true);
  return {
    vocabSize: requireInteger(config, 'vocab_size', file),
    maxPositionEmbeddings: maxPositions,
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads: numHeads,
    headDim,
    norm: { kind: 'layer', eps: 1e-5 },
    learnedPositions: { tableSize: maxPositions + 2, offset: 2 },
    attention: { qkvBias: bias, denseBias: bias, slidingWindows: new Array<number>(numLayers).fill(0), rotary: null },
    mlp: {
      kind: 'plain',
      activation: parseActivation(optionalString(config, 'activation_function', file, 'relu'), 'activation_function', file),
      intermediateSize: requireInteger(config, 'ffn_dim', file),
      bias,
    },
    residual: 'sequential',
    tieWordEmbeddings: optionalBoolean(config, 'tie_word_embeddings', file, true),
    lmHeadBias: false,
  };
}
