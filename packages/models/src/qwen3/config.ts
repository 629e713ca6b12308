import { parseLlamaConfig } from '../llama/config';
import type { HfConfig } from '../hf-config';
import type { DecoderConfig } from '../common/decoder';
import { decoderFromLlama } from '../common/llama-like';

/**
 * Qwen3 = LLaMA (explicit head_dim, attention_bias for q/k/v/o, Qwen's use_sliding_window/layer_types)
 * + an RMSNorm over each head of q and k before RoPE, with the model's rms_norm_eps.
 */
export function parseQwen3Config(config: HfConfig, file: string): DecoderConfig {
  const llama = parseLlamaConfig(config, file, { slidingWindow: 'qwen2', defaultRmsNormEps: 1e-6 });
  const decoder = decoderFromLlama(llama);
  return { ...decoder, attention: { ...decoder.attention, qkNorm: true } };
}
