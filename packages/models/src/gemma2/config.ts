import { HfConfig, optionalInteger, optionalNumber } from '../hf-config';
import { ConfigError } from '../registry';
import type { DecoderConfig } from '../common/decoder';
import { readSlidingWindows } from '../common/config';
import { parseGemmaBase } from '../gemma/config';

/**
 * Gemma 2 = Gemma + norms before and after both attention and MLP ("sandwich"), attention scaled by
 * query_pre_attn_scalar^-0.5, optional soft-capping of attention scores and final logits
 * (cap * tanh(x / cap)), and sliding-window attention on the layers `layer_types` marks (older configs:
 * every even layer, as transformers' Gemma2Config fills layer_types in).
 */
export function parseGemma2Config(config: HfConfig, file: string): DecoderConfig {
  const { decoder } = parseGemmaBase(config, file);
  const queryPreAttnScalar = optionalNumber(config, 'query_pre_attn_scalar', file, 256);
  if (!(queryPreAttnScalar > 0)) throw new ConfigError(file, 'query_pre_attn_scalar', `expected a positive number, got ${queryPreAttnScalar}`);
  const cap = (key: string) => {
    const value = optionalNumber(config, key, file, 0);
    if (value < 0) throw new ConfigError(file, key, `expected a positive number or null, got ${value}`);
    return value > 0 ? value : undefined;
  };
  const numLayers = decoder.numLayers;
  let slidingWindows = readSlidingWindows(config, file, numLayers, { allLayersByDefault: false });
  if ((config.layer_types === undefined || config.layer_types === null) && config.sliding_window != null) {
    const size = optionalInteger(config, 'sliding_window', file, 4096);
    slidingWindows = slidingWindows.map((_, layer) => (layer % 2 === 0 ? size : 0));
  }
  const attnSoftcap = cap('attn_logit_softcapping');
  const finalSoftcap = cap('final_logit_softcapping');
  return {
    ...decoder,
    residual: 'sandwich',
    attention: {
      ...decoder.attention,
      scale: Math.pow(queryPreAttnScalar, -0.5),
      slidingWindows,
      ...(attnSoftcap ? { softcap: attnSoftcap } : {}),
    },
    ...(finalSoftcap ? { finalLogitSoftcap: finalSoftcap } : {}),
  };
}
