import type { CheckpointTensorPlan } from '../types';
import type { DecoderConfig } from '../common/decoder';
import { llamaLikePlan } from '../common/llama-like';

/** LLaMA's layout plus `self_attn.{q,k}_norm.weight` [head_dim] per layer. */
export function qwen3CheckpointTensors(config: DecoderConfig): CheckpointTensorPlan[] {
  return llamaLikePlan(config);
}
