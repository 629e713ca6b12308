import type { CheckpointTensorPlan } from '../types';
import type { DecoderConfig } from '../common/decoder';
import { PlanBuilder } from '../common/plan';

/** LLaMA's `model.layers.N.self_attn.*` names, LayerNorms with biases, and `mlp.c_fc` / `mlp.c_proj`. */
export function starcoder2CheckpointTensors(config: DecoderConfig): CheckpointTensorPlan[] {
  const { hiddenSize: hidden, vocabSize, norm, numHeads, numKvHeads, headDim, mlp, attention } = config;
  const plan = new PlanBuilder();
  const bias = mlp.kind !== 'moe' && mlp.bias;
  plan.copy('transformer.vocab_embedding.weight', 'model.embed_tokens.weight', [vocabSize, hidden]);
  for (let i = 0; i < config.numLayers; i++) {
    const layer = `transformer.layers.${i}`;
    const hf = `model.layers.${i}`;
    plan.norm(`${layer}.input_layernorm`, `${hf}.input_layernorm`, hidden, norm);
    plan.linear(`${layer}.attention.q`, `${hf}.self_attn.q_proj`, numHeads * headDim, hidden, attention.qkvBias);
    plan.linear(`${layer}.attention.k`, `${hf}.self_attn.k_proj`, numKvHeads * headDim, hidden, attention.qkvBias);
    plan.linear(`${layer}.attention.v`, `${hf}.self_attn.v_proj`, numKvHeads * headDim, hidden, attention.qkvBias);
    plan.linear(`${layer}.attention.dense`, `${hf}.self_attn.o_proj`, hidden, numHeads * headDim, attention.denseBias);
    plan.norm(`${layer}.post_layernorm`, `${hf}.post_attention_layernorm`, hidden, norm);
    plan.linear(`${layer}.mlp.fc`, `${hf}.mlp.c_fc`, mlp.intermediateSize, hidden, bias);
    plan.linear(`${layer}.mlp.proj`, `${hf}.mlp.c_proj`, hidden, mlp.intermediateSize, bias);
  }
  plan.norm('transformer.ln_f', 'model.norm', hidden, norm);
  if (!config.tieWordEmbeddings) plan.copy('lm_head.weight', 'lm_head.weight', [vocabSize, hidden]);
  return plan.tensors;
}
