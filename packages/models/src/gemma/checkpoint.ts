import type { CheckpointTensorPlan } from '../types';
import type { DecoderConfig } from '../common/decoder';
import { llamaLikePlan } from '../common/llama-like';

/** LLaMA's tensor layout (the (1 + w) is applied by the norm, not folded into the weights). */
export function gemmaCheckpointTensors(config: DecoderConfig): CheckpointTensorPlan[] {
  return llamaLikePlan(config);
}
