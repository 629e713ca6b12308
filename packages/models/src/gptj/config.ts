import { HfConfig, optionalBoolean, optionalString, readRope, requireInteger } from '../hf-config';
import type { DecoderConfig } from '../common/decoder';
import { parseActivation } from '../common/activation';
import { headDimOf, readEps, readIntegerKey } from '../common/config';
import { ConfigError } from '../registry';

/**
 * GPT-J: attention and MLP in parallel over ln_1, RoPE on the first rotary_dim features of each head
 * with GPT-J's rotate-every-two pairing, no attention biases, a biased 4x gelu_new MLP and a biased,
 * untied LM head.
 */
export function parseGptjConfig(config: HfConfig, file: string): DecoderConfig {
  const hiddenSize = readIntegerKey(config, file, ['n_embd', 'hidden_size']);
  const numHeads = readIntegerKey(config, file, ['n_head', 'num_attention_heads']);
  const numLayers = readIntegerKey(config, file, ['n_layer', 'num_hidden_layers']);
  const headDim = headDimOf(hiddenSize, numHeads, file, 'n_head');
  const rotaryDim = readIntegerKey(config, file, ['rotary_dim'], headDim);
  if (rotaryDim > headDim || rotaryDim % 2 !== 0) {
    throw new ConfigError(file, 'rotary_dim', `${rotaryDim} must be even and at most the head size ${headDim}`);
  }
  const rope = readRope(config, file);
  return {
    vocabSize: requireInteger(config, 'vocab_size', file),
    maxPositionEmbeddings: readIntegerKey(config, file, ['n_positions', 'max_position_embeddings'], 2048),
    hiddenSize,
    numLayers,
    numHeads,
    numKvHeads: numHeads,
    headDim,
    norm: { kind: 'layer', eps: readEps(config, file, ['layer_norm_epsilon'], 1e-5) },
    attention: {
      qkvBias: false,
      denseBias: false,
      slidingWindows: new Array<number>(numLayers).fill(0),
      rotary: { theta: rope.theta, scaling: rope.scaling, rotaryDim, interleaved: true },
    },
    mlp: {
      kind: 'plain',
      activation: parseActivation(optionalString(config, 'activation_function', file, 'gelu_new'), 'activation_function', file),
      intermediateSize: readIntegerKey(config, file, ['n_inner'], 4 * hiddenSize),
      bias: true,
    },
    residual: 'parallel-shared-norm',
    tieWordEmbeddings: optionalBoolean(config, 'tie_word_embeddings', file, false),
    lmHeadBias: true,
  };
}
