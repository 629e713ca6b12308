import type { CheckpointTensorPlan } from '../types';
import type { DecoderConfig } from '../common/decoder';
import { PlanBuilder, contiguousRows, interleavedRows } from '../common/plan';
import type { GptBigCodeConfig } from './config';

/**
 * `attn.c_attn` (nn.Linear): with multi_query, [q (hidden rows); k (head_dim); v (head_dim)]; without,
 * per head [q; k; v] (GPTBigCodeAttention splits it as (num_heads, 3 * head_dim), unlike GPT-2).
 */
export function gptbigcodeCheckpointTensors(decoder: DecoderConfig): CheckpointTensorPlan[] {
  const config = decoder as GptBigCodeConfig;
  const { hiddenSize: hidden, vocabSize, norm, numHeads, numKvHeads, headDim: d, mlp } = config;
  const plan = new PlanBuilder();
  plan.copy('transformer.vocab_embedding.weight', 'transformer.wte.weight', [vocabSize, hidden]);
  plan.copy('transformer.position_embedding.weight', 'transformer.wpe.weight', [config.learnedPositions!.tableSize, hidden]);
  for (let i = 0; i < config.numLayers; i++) {
    const layer = `transformer.layers.${i}`;
    const hf = `transformer.h.${i}`;
    plan.norm(`${layer}.input_layernorm`, `${hf}.ln_1`, hidden, norm);
    const rows = config.multiQuery ? contiguousRows([numHeads * d, d, d]) : interleavedRows(numHeads, [d, d, d]);
    plan.fusedLinear(`${hf}.attn.c_attn`, hidden, (numHeads + 2 * numKvHeads) * d, true, [
      { name: `${layer}.attention.q`, rows: rows[0] },
      { name: `${layer}.attention.k`, rows: rows[1] },
      { name: `${layer}.attention.v`, rows: rows[2] },
    ]);
    plan.linear(`${layer}.attention.dense`, `${hf}.attn.c_proj`, hidden, hidden, true);
    plan.norm(`${layer}.post_layernorm`, `${hf}.ln_2`, hidden, norm);
    plan.linear(`${layer}.mlp.fc`, `${hf}.mlp.c_fc`, mlp.intermediateSize, hidden, true);
    plan.linear(`${layer}.mlp.proj`, `${hf}.mlp.c_proj`, hidden, mlp.intermediateSize, true);
  }
  plan.norm('transformer.ln_f', 'transformer.ln_f', hidden, norm);
  if (!config.tieWordEmbeddings) plan.copy('lm_head.weight', 'lm_head.weight', [vocabSize, hidden]);
  return plan.tensors;
}
