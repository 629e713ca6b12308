import { HfConfig, optionalBoolean, optionalInteger, optionalString, readRope, requireInteger } from '../hf-config';
import type { DecoderConfig } from '../common/decoder';
import { parseActivation } from '../common/activation';
import { headDimOf, readEps, readPartialRotaryFactor, rotaryDimFor } from '../common/config';

/**
 * GPT-NeoX (Pythia): LayerNorm, RoPE on the first rotary_pct (legacy key; transformers 5:
 * rope_parameters.partial_rotary_factor) of each head with base rotary_emb_base (legacy) / rope_theta,
 * exact GELU, and `use_parallel_residual` (default true): x + attn(n1(x)) + mlp(n2(x)).
 */
export function parseGptNeoxConfig(config: HfConfig, file: string): DecoderConfig {
  const hiddenSize = requireInteger(config, 'hidden_size', file);
  const numHeads = requireInteger(config, 'num_attention_heads', file);
  const numLayers = requireInteger(config, 'num_hidden_layers', file);
  const headDim = headDimOf(hiddenSize, numHeads, file, 'num_attention_heads');
  // The legacy base key; readRope reads rope_parameters first, then a top-level rope_theta.
  const legacyTheta = config.rope_theta ?? config.rotary_emb_base;
  const rope = readRope({ ...config, rope_theta: legacyTheta }, file);
  const factor = readPartialRotaryFactor(config, file, 0.25);
  const attentionBias = optionalBoolean(config, 'attention_bias', file, true);
  return {
    vocabSize: requireInteger(config, 'vocab_size', file),
    maxPositionEmbeddings: optionalInteger(config, 'max_position_embeddings', file, 2048),
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads: numHeads,
    headDim,
    norm: { kind: 'layer', eps: readEps(config, file, ['layer_norm_eps'], 1e-5) },
    attention: {
      qkvBias: attentionBias,
      denseBias: attentionBias,
      slidingWindows: new Array<number>(numLayers).fill(0),
      rotary: { theta: rope.theta, scaling: rope.scaling, rotaryDim: rotaryDimFor(headDim, factor, file, 'rotary_pct'), interleaved: false },
    },
    mlp: {
      kind: 'plain',
      activation: parseActivation(optionalString(config, 'hidden_act', file, 'gelu'), 'hidden_act', file),
      intermediateSize: requireInteger(config, 'intermediate_size', file),
      bias: true,
    },
    residual: optionalBoolean(config, 'use_parallel_residual', file, true) ? 'parallel' : 'sequential',
    tieWordEmbeddings: optionalBoolean(config, 'tie_word_embeddings', file, false),
    lmHeadBias: false,
  };
}
