import type { CheckpointTensorPlan } from '../types';
import type { DecoderConfig } from '../common/decoder';
import { PlanBuilder, interleavedRows } from '../common/plan';

/**
 * `attention.query_key_value` holds, per head, [q; k; v] (head_dim rows each): q, k and v are gathered
 * head by head from row slices. The LM head is `embed_out`.
 */
export function gptneoxCheckpointTensors(config: DecoderConfig): CheckpointTensorPlan[] {
  const { hiddenSize: hidden, vocabSize, norm, numHeads, headDim, mlp, attention } = config;
  const plan = new PlanBuilder();
  plan.copy('transformer.vocab_embedding.weight', 'gpt_neox.embed_in.weight', [vocabSize, hidden]);
  for (let i = 0; i < config.numLayers; i++) {
    const layer = `transformer.layers.${i}`;
    const hf = `gpt_neox.layers.${i}`;
    plan.norm(`${layer}.input_layernorm`, `${hf}.input_layernorm`, hidden, norm);
    const rows = interleavedRows(numHeads, [headDim, headDim, headDim]);
    plan.fusedLinear(`${hf}.attention.query_key_value`, hidden, 3 * numHeads * headDim, attention.qkvBias, [
      { name: `${layer}.attention.q`, rows: rows[0] },
      { name: `${layer}.attention.k`, rows: rows[1] },
      { name: `${layer}.attention.v`, rows: rows[2] },
    ]);
    plan.linear(`${layer}.attention.dense`, `${hf}.attention.dense`, hidden, numHeads * headDim, attention.denseBias);
    plan.norm(`${layer}.post_layernorm`, `${hf}.post_attention_layernorm`, hidden, norm);
    plan.linear(`${layer}.mlp.fc`, `${hf}.mlp.dense_h_to_4h`, mlp.intermediateSize, hidden, true);
    plan.linear(`${layer}.mlp.proj`, `${hf}.mlp.dense_4h_to_h`, hidden, mlp.intermediateSize, true);
  }
  plan.norm('transformer.ln_f', 'gpt_neox.final_layer_norm', hidden, norm);
  if (!config.tieWordEmbeddings) plan.copy('lm_head.weight', 'embed_out.weight', [vocabSize, hidden]);
  return plan.tensors;
}
