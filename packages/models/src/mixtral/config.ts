import { parseLlamaConfig } from '../llama/config';
import { HfConfig, optionalBoolean, requireInteger } from '../hf-config';
import { ConfigError } from '../registry';
import type { DecoderConfig } from '../common/decoder';
import { decoderFromLlama } from '../common/llama-like';

/**
 * Mixtral = Mistral whose MLP is `num_local_experts` SwiGLU experts, `num_experts_per_tok` of them chosen
 * per token: softmax over all router logits, top-k, renormalised to sum 1 (MixtralSparseMoeBlock).
 */
export function parseMixtralConfig(config: HfConfig, file: string): DecoderConfig {
  const llama = parseLlamaConfig(config, file, { slidingWindow: 'all-layers', defaultRmsNormEps: 1e-5 });
  const numExperts = requireInteger(config, 'num_local_experts', file);
  const topK = requireInteger(config, 'num_experts_per_tok', file);
  if (topK > numExperts) {
    throw new ConfigError(file, 'num_experts_per_tok', `${topK} exceeds num_local_experts ${numExperts}`);
  }
  if (optionalBoolean(config, 'mlp_bias', file, false)) throw new ConfigError(file, 'mlp_bias', 'Mixtral experts have no biases');
  return {
    ...decoderFromLlama(llama),
    mlp: { kind: 'moe', activation: 'silu', intermediateSize: llama.intermediateSize, numExperts, topK, normalizeTopK: true },
  };
}
