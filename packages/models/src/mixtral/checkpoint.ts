import type { CheckpointTensorPlan } from '../types';
import type { DecoderConfig } from '../common/decoder';
import { llamaLikePlan } from '../common/llama-like';

/**
 * LLaMA's attention layout; the MLP's `block_sparse_moe.gate` becomes `mlp.router`, and each expert's
 * w1/w3/w2 are stacked (dim 0, expert order) into `mlp.experts.{gate,fc,proj}.weight`.
 */
export function mixtralCheckpointTensors(config: DecoderConfig): CheckpointTensorPlan[] {
  return llamaLikePlan(config);
}
