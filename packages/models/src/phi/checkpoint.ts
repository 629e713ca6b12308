import type { CheckpointTensorPlan } from '../types';
import type { DecoderConfig } from '../common/decoder';
import { PlanBuilder } from '../common/plan';

/** `model.layers.N.{input_layernorm, self_attn.{q,k,v}_proj, self_attn.dense, mlp.fc1, mlp.fc2}`, `model.final_layernorm`. */
export function phiCheckpointTensors(config: DecoderConfig): CheckpointTensorPlan[] {
  const { hiddenSize: hidden, vocabSize, norm, numHeads, numKvHeads, headDim, mlp } = config;
  const plan = new PlanBuilder();
  plan.copy('transformer.vocab_embedding.weight', 'model.embed_tokens.weight', [vocabSize, hidden]);
  for (let i = 0; i < config.numLayers; i++) {
    const layer = `transformer.layers.${i}`;
    const hf = `model.layers.${i}`;
    plan.norm(`${layer}.input_layernorm`, `${hf}.input_layernorm`, hidden, norm);
    plan.linear(`${layer}.attention.q`, `${hf}.self_attn.q_proj`, numHeads * headDim, hidden, true);
    plan.linear(`${layer}.attention.k`, `${hf}.self_attn.k_proj`, numKvHeads * headDim, hidden, true);
    plan.linear(`${layer}.attention.v`, `${hf}.self_attn.v_proj`, numKvHeads * headDim, hidden, true);
    plan.linear(`${layer}.attention.dense`, `${hf}.self_attn.dense`, hidden, numHeads * headDim, true);
    plan.linear(`${layer}.mlp.fc`, `${hf}.mlp.fc1`, mlp.intermediateSize, hidden, true);
    plan.linear(`${layer}.mlp.proj`, `${hf}.mlp.fc2`, hidden, mlp.intermediateSize, true);
  }
  plan.norm('transformer.ln_f', 'model.final_layernorm', hidden, norm);
  if (!config.tieWordEmbeddings) plan.copy('lm_head.weight', 'lm_head.weight', [vocabSize, hidden]);
  plan.copy('lm_head.bias', 'lm_head.bias', [vocabSize]);
  return plan.tensors;
}
