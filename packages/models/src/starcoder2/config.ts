import { HfConfig, optionalBoolean, optionalInteger, optionalString, readRope, requireInteger } from '../hf-config';
import { ConfigError } from '../registry';
import type { DecoderConfig } from '../common/decoder';
import { parseActivation } from '../common/activation';
import { headDimOf, readEps, readSlidingWindows } from '../common/config';

/**
 * Starcoder2: LLaMA's attention (GQA, full RoPE, sliding_window on every layer when set) with LayerNorm
 * (norm_epsilon), biases per use_bias, and a non-gated c_fc -> gelu -> c_proj MLP; tied head by default.
 */
export function parseStarcoder2Config(config: HfConfig, file: string): DecoderConfig {
  const hiddenSize = requireInteger(config, 'hidden_size', file);
  const numHeads = requireInteger(config, 'num_attention_heads', file);
  const numKvHeads = optionalInteger(config, 'num_key_value_heads', file, numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw new ConfigError(file, 'num_key_value_heads', `${numKvHeads} does not divide num_attention_heads ${numHeads}`);
  }
  const numLayers = requireInteger(config, 'num_hidden_layers', file);
  const headDim = headDimOf(hiddenSize, numHeads, file, 'num_attention_heads');
  const rope = readRope(config, file);
  const bias = optionalBoolean(config, 'use_bias', file, true);
  return {
    vocabSize: requireInteger(config, 'vocab_size', file),
    maxPositionEmbeddings: optionalInteger(config, 'max_position_embeddings', file, 4096),
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    norm: { kind: 'layer', eps: readEps(config, file, ['norm_epsilon'], 1e-5) },
    attention: {
      qkvBias: bias,
      denseBias: bias,
      slidingWindows: readSlidingWindows(config, file, numLayers, { allLayersByDefault: true }),
      rotary: { theta: rope.theta, scaling: rope.scaling, rotaryDim: headDim, interleaved: false },
    },
    mlp: {
      kind: 'plain',
      activation: parseActivation(optionalString(config, 'hidden_act', file, 'gelu_pytorch_tanh'), 'hidden_act', file),
      intermediateSize: requireInteger(config, 'intermediate_size', file),
      bias,
    },
    residual: 'sequential',
    tieWordEmbeddings: optionalBoolean(config, 'tie_word_embeddings', file, true),
    lmHeadBias: false,
  };
}
