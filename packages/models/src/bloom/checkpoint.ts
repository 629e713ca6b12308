import type { CheckpointTensorPlan } from '../types';
import type { DecoderConfig } from '../common/decoder';
import { PlanBuilder, interleavedRows } from '../common/plan';

/** `self_attention.query_key_value` holds, per head, [q; k; v] (BloomAttention._reshape): cut head by head. */
export function bloomCheckpointTensors(config: DecoderConfig): CheckpointTensorPlan[] {
  const { hiddenSize: hidden, vocabSize, norm, numHeads, headDim, mlp } = config;
  const plan = new PlanBuilder();
  plan.copy('transformer.vocab_embedding.weight', 'transformer.word_embeddings.weight', [vocabSize, hidden]);
  plan.norm('transformer.ln_embed', 'transformer.word_embeddings_layernorm', hidden, norm);
  for (let i = 0; i < config.numLayers; i++) {
    const layer = `transformer.layers.${i}`;
    const hf = `transformer.h.${i}`;
    plan.norm(`${layer}.input_layernorm`, `${hf}.input_layernorm`, hidden, norm);
    const rows = interleavedRows(numHeads, [headDim, headDim, headDim]);
    plan.fusedLinear(`${hf}.self_attention.query_key_value`, hidden, 3 * hidden, true, [
      { name: `${layer}.attention.q`, rows: rows[0] },
      { name: `${layer}.attention.k`, rows: rows[1] },
      { name: `${layer}.attention.v`, rows: rows[2] },
    ]);
    plan.linear(`${layer}.attention.dense`, `${hf}.self_attention.dense`, hidden, hidden, true);
    plan.norm(`${layer}.post_layernorm`, `${hf}.post_attention_layernorm`, hidden, norm);
    plan.linear(`${layer}.mlp.fc`, `${hf}.mlp.dense_h_to_4h`, mlp.intermediateSize, hidden, true);
    plan.linear(`${layer}.mlp.proj`, `${hf}.mlp.dense_4h_to_h`, hidden, mlp.intermediateSize, true);
  }
  plan.norm('transformer.ln_f', 'transformer.ln_f', hidden, norm);
  if (!config.tieWordEmbeddings) plan.copy('lm_head.weight', 'lm_head.weight', [vocabSize, hidden]);
  return plan.tensors;
}
