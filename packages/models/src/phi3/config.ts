import { parseLlamaConfig } from '../llama/config';
import type { HfConfig } from '../hf-config';
import type { DecoderConfig } from '../common/decoder';
import { decoderFromLlama } from '../common/llama-like';
import { readPartialRotaryFactor, rotaryDimFor } from '../common/config';

/**
 * Phi-3 = LLaMA whose q/k/v and gate/up projections are fused in the HF checkpoint (split at conversion).
 * Its sliding_window applies to every layer; RoPE may be partial (partial_rotary_factor). LongRoPE
 * (`rope_type: longrope`) is rejected by the RoPE reader, naming the key.
 */
export function parsePhi3Config(config: HfConfig, file: string): DecoderConfig {
  const llama = parseLlamaConfig(config, file, { slidingWindow: 'all-layers', defaultRmsNormEps: 1e-5 });
  const decoder = decoderFromLlama(llama);
  const rotaryDim = rotaryDimFor(llama.headDim, readPartialRotaryFactor(config, file), file, 'partial_rotary_factor');
  return { ...decoder, attention: { ...decoder.attention, rotary: { ...decoder.attention.rotary!, rotaryDim } } };
}
