import type { CheckpointTensorPlan } from '../types';
import type { DecoderConfig } from '../common/decoder';
import { PlanBuilder } from '../common/plan';

/** `transformer.h.N.{ln_1, attn.{q,k,v,out}_proj, mlp.fc_in, mlp.fc_out}`, `lm_head.{weight,bias}`. */
export function gptjCheckpointTensors(config: DecoderConfig): CheckpointTensorPlan[] {
  const { hiddenSize: hidden, vocabSize, norm, mlp } = config;
  const plan = new PlanBuilder();
  plan.copy('transformer.vocab_embedding.weight', 'transformer.wte.weight', [vocabSize, hidden]);
  for (let i = 0; i < config.numLayers; i++) {
    const layer = `transformer.layers.${i}`;
    const hf = `transformer.h.${i}`;
    plan.norm(`${layer}.input_layernorm`, `${hf}.ln_1`, hidden, norm);
    plan.linear(`${layer}.attention.q`, `${hf}.attn.q_proj`, hidden, hidden, false);
    plan.linear(`${layer}.attention.k`, `${hf}.attn.k_proj`, hidden, hidden, false);
    plan.linear(`${layer}.attention.v`, `${hf}.attn.v_proj`, hidden, hidden, false);
    plan.linear(`${layer}.attention.dense`, `${hf}.attn.out_proj`, hidden, hidden, false);
    plan.linear(`${layer}.mlp.fc`, `${hf}.mlp.fc_in`, mlp.intermediateSize, hidden, true);
    plan.linear(`${layer}.mlp.proj`, `${hf}.mlp.fc_out`, hidden, mlp.intermediateSize, true);
  }
  plan.norm('transformer.ln_f', 'transformer.ln_f', hidden, norm);
  if (!config.tieWordEmbeddings) plan.copy('lm_head.weight', 'lm_head.weight', [vocabSize, hidden]);
  plan.copy('lm_head.bias', 'lm_head.bias', [vocabSize]);
  return plan.tensors;
}
