import type { CheckpointTensorPlan } from '../types';
import type { DecoderConfig } from '../common/decoder';
import { llamaLikePlan } from '../common/llama-like';

/** `self_attn.qkv_proj` rows [q; k; v] and `mlp.gate_up_proj` rows [gate; up], cut into Kiln's linears. */
export function phi3CheckpointTensors(config: DecoderConfig): CheckpointTensorPlan[] {
  return llamaLikePlan(config, { fusedQkv: true, fusedGateUp: true });
}
