import { HfConfig, optionalBoolean, requireInteger } from '../hf-config';
import type { DecoderConfig } from '../common/decoder';
import { alibiSlopes } from '../common/alibi';
import { headDimOf, readEps, readIntegerKey } from '../common/config';

/**
 * BLOOM: no position embeddings but ALiBi (a per-head linear bias on key distance, slopes as
 * transformers' build_alibi_tensor), a LayerNorm right after the word embeddings, a 4x MLP with BLOOM's
 * tanh GELU, biases everywhere, tied LM head. apply_residual_connection_post_layernorm takes the residual
 * after each norm instead of before.
 */
export function parseBloomConfig(config: HfConfig, file: string): DecoderConfig {
  const hiddenSize = readIntegerKey(config, file, ['hidden_size', 'n_embed']);
  const numHeads = readIntegerKey(config, file, ['n_head', 'num_attention_heads']);
  const numLayers = readIntegerKey(config, file, ['n_layer', 'num_hidden_layers']);
  const headDim = headDimOf(hiddenSize, numHeads, file, 'n_head');
  return {
    vocabSize: requireInteger(config, 'vocab_size', file),
    // ALiBi has no position table; BLOOM was trained on 2048-token sequences.
    maxPositionEmbeddings: readIntegerKey(config, file, ['seq_length', 'max_position_embeddings'], 2048),
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads: numHeads,
    headDim,
    norm: { kind: 'layer', eps: readEps(config, file, ['layer_norm_epsilon'], 1e-5) },
    embeddingNorm: true,
    attention: {
      qkvBias: true,
      denseBias: true,
      slidingWindows: new Array<number>(numLayers).fill(0),
      rotary: null,
      alibiSlopes: alibiSlopes(numHeads),
    },
    mlp: { kind: 'plain', activation: 'gelu_tanh', intermediateSize: 4 * hiddenSize, bias: true },
    residual: 'sequential',
    residualFromNormed: optionalBoolean(config, 'apply_residual_connection_post_layernorm', file, false),
    tieWordEmbeddings: optionalBoolean(config, 'tie_word_embeddings', file, true),
    lmHeadBias: false,
  };
}
