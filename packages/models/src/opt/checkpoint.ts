import type { CheckpointTensorPlan } from '../types';
import type { DecoderConfig } from '../common/decoder';
import { PlanBuilder } from '../common/plan';

/** `model.decoder.*`: self_attn_layer_norm before attention, final_layer_norm before the MLP (fc1, fc2). */
export function optCheckpointTensors(config: DecoderConfig): CheckpointTensorPlan[] {
  const { hiddenSize: hidden, vocabSize, norm, mlp, attention } = config;
  const plan = new PlanBuilder();
  plan.copy('transformer.vocab_embedding.weight', 'model.decoder.embed_tokens.weight', [vocabSize, hidden]);
  plan.copy('transformer.position_embedding.weight', 'model.decoder.embed_positions.weight', [config.learnedPositions!.tableSize, hidden]);
  for (let i = 0; i < config.numLayers; i++) {
    const layer = `transformer.layers.${i}`;
    const hf = `model.decoder.layers.${i}`;
    plan.norm(`${layer}.input_layernorm`, `${hf}.self_attn_layer_norm`, hidden, norm);
    plan.linear(`${layer}.attention.q`, `${hf}.self_attn.q_proj`, hidden, hidden, attention.qkvBias);
    plan.linear(`${layer}.attention.k`, `${hf}.self_attn.k_proj`, hidden, hidden, attention.qkvBias);
    plan.linear(`${layer}.attention.v`, `${hf}.self_attn.v_proj`, hidden, hidden, attention.qkvBias);
    plan.linear(`${layer}.attention.dense`, `${hf}.self_attn.out_proj`, hidden, hidden, attention.denseBias);
    plan.norm(`${layer}.post_layernorm`, `${hf}.final_layer_norm`, hidden, norm);
    plan.linear(`${layer}.mlp.fc`, `${hf}.fc1`, mlp.intermediateSize, hidden, mlp.kind !== 'moe' && mlp.bias);
    plan.linear(`${layer}.mlp.proj`, `${hf}.fc2`, hidden, mlp.intermediateSize, mlp.kind !== 'moe' && mlp.bias);
  }
  plan.norm('transformer.ln_f', 'model.decoder.final_layer_norm', hidden, norm);
  if (!config.tieWordEmbeddings) plan.copy('lm_head.weight', 'lm_head.weight', [vocabSize, hidden]);
  return plan.tensors;
}
