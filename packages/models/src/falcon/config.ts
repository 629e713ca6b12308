import { HfConfig, optionalBoolean, optionalInteger, optionalString, readRope, requireInteger } from '../hf-config';
import { ConfigError } from '../registry';
import type { DecoderConfig } from '../common/decoder';
import { parseActivation } from '../common/activation';
import { headDimOf, readEps } from '../common/config';

export interface FalconConfig extends DecoderConfig {
  /** How query_key_value packs q, k and v (see checkpoint.ts). */
  qkvLayout: 'grouped' | 'per-head' | 'multi-query';
  /** HF norm names: ln_attn/ln_mlp (new architecture, two norms) or input_layernorm (+ post_attention_layernorm). */
  twoParallelNorms: boolean;
}

/**
 * Falcon (modeling_falcon.py): RoPE, exact GELU, LayerNorm, linear biases per `bias`. The attention
 * layout follows `new_decoder_architecture` (grouped kv heads, num_kv_heads) or `multi_query` (one kv
 * head); the block is parallel (x + attn(n(x)) + mlp(n(x)), or two norms ln_attn/ln_mlp in the new
 * architecture) unless parallel_attn is false. ALiBi Falcons (alibi: true) are not supported.
 */
export function parseFalconConfig(config: HfConfig, file: string): FalconConfig {
  if (optionalBoolean(config, 'alibi', file, false)) {
    throw new ConfigError(file, 'alibi', 'true is not supported: Kiln runs RoPE Falcon models only');
  }
  const hiddenSize = requireInteger(config, 'hidden_size', file);
  const numHeads = requireInteger(config, 'num_attention_heads', file);
  const numLayers = requireInteger(config, 'num_hidden_layers', file);
  const headDim = headDimOf(hiddenSize, numHeads, file, 'num_attention_heads');
  const newArchitecture = optionalBoolean(config, 'new_decoder_architecture', file, false);
  const multiQuery = optionalBoolean(config, 'multi_query', file, true);
  const parallelAttn = optionalBoolean(config, 'parallel_attn', file, true);
  const configKvHeads = optionalInteger(config, 'num_kv_heads', file, numHeads);
  const numKvHeads = newArchitecture ? configKvHeads : multiQuery ? 1 : numHeads;
  if (numHeads % numKvHeads !== 0) {
    throw new ConfigError(file, 'num_kv_heads', `${numKvHeads} does not divide num_attention_heads ${numHeads}`);
  }
  // FalconDecoderLayer: the new architecture defaults to two norms (ln_attn, ln_mlp).
  const numLn = optionalInteger(config, 'num_ln_in_parallel_attn', file, newArchitecture ? 2 : 1);
  if (newArchitecture && numLn === 1 && !parallelAttn) {
    throw new ConfigError(file, 'parallel_attn', 'false with new_decoder_architecture and one norm has no MLP input in transformers');
  }
  const twoParallelNorms = newArchitecture && numLn === 2;
  const residual = twoParallelNorms ? 'parallel' : newArchitecture || parallelAttn ? 'parallel-shared-norm' : 'sequential';
  const bias = optionalBoolean(config, 'bias', file, false);
  const rope = readRope(config, file);
  return {
    vocabSize: requireInteger(config, 'vocab_size', file),
    maxPositionEmbeddings: optionalInteger(config, 'max_position_embeddings', file, 2048),
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    norm: { kind: 'layer', eps: readEps(config, file, ['layer_norm_epsilon'], 1e-5) },
    attention: {
      qkvBias: bias,
      denseBias: bias,
      slidingWindows: new Array<number>(numLayers).fill(0),
      rotary: { theta: rope.theta, scaling: rope.scaling, rotaryDim: headDim, interleaved: false },
    },
    mlp: {
      kind: 'plain',
      activation: parseActivation(optionalString(config, 'activation', file, 'gelu'), 'activation', file),
      intermediateSize: optionalInteger(config, 'ffn_hidden_size', file, 4 * hiddenSize),
      bias,
    },
    residual,
    tieWordEmbeddings: optionalBoolean(config, 'tie_word_embeddings', file, true),
    lmHeadBias: false,
    qkvLayout: newArchitecture ? 'grouped' : multiQuery ? 'multi-query' : 'per-head',
    twoParallelNorms,
  };
}
