import type { CheckpointTensorPlan } from '../types';
import type { DecoderConfig } from '../common/decoder';
import { llamaLikePlan } from '../common/llama-like';

/**
 * LLaMA's layout plus `pre_feedforward_layernorm` and `post_feedforward_layernorm`; HF's
 * `post_attention_layernorm` normalises the attention output (Kiln's `post_layernorm` in a sandwich layer).
 */
export function gemma2CheckpointTensors(config: DecoderConfig): CheckpointTensorPlan[] {
  return llamaLikePlan(config);
}
