import type { CheckpointTensorPlan } from '../types';
import type { DecoderConfig } from '../common/decoder';
import { PlanBuilder, RowRange, contiguousRows, interleavedRows } from '../common/plan';
import type { FalconConfig } from './config';

/**
 * `self_attention.query_key_value` layouts (FalconAttention._split_heads):
 * - multi-query: [q heads; k; v];
 * - per-head (multi_query false): per head [q; k; v];
 * - grouped (new architecture): per kv group [its q heads; k; v].
 */
function qkvRows(config: FalconConfig): RowRange[][] {
  const { numHeads, numKvHeads, headDim: d } = config;
  switch (config.qkvLayout) {
    case 'multi-query':
      return contiguousRows([numHeads * d, d, d]);
    case 'per-head':
      return interleavedRows(numHeads, [d, d, d]);
    case 'grouped':
      return interleavedRows(numKvHeads, [(numHeads / numKvHeads) * d, d, d]);
  }
}

export function falconCheckpointTensors(decoder: DecoderConfig): CheckpointTensorPlan[] {
  const config = decoder as FalconConfig;
  const { hiddenSize: hidden, vocabSize, norm, numHeads, numKvHeads, headDim, mlp, attention } = config;
  const plan = new PlanBuilder();
  plan.copy('transformer.vocab_embedding.weight', 'transformer.word_embeddings.weight', [vocabSize, hidden]);
  for (let i = 0; i < config.numLayers; i++) {
    const layer = `transformer.layers.${i}`;
    const hf = `transformer.h.${i}`;
    if (config.twoParallelNorms) {
      plan.norm(`${layer}.input_layernorm`, `${hf}.ln_attn`, hidden, norm);
      plan.norm(`${layer}.post_layernorm`, `${hf}.ln_mlp`, hidden, norm);
    } else {
      plan.norm(`${layer}.input_layernorm`, `${hf}.input_layernorm`, hidden, norm);
      if (config.residual === 'sequential') plan.norm(`${layer}.post_layernorm`, `${hf}.post_attention_layernorm`, hidden, norm);
    }
    const rows = qkvRows(config);
    plan.fusedLinear(`${hf}.self_attention.query_key_value`, hidden, (numHeads + 2 * numKvHeads) * headDim, attention.qkvBias, [
      { name: `${layer}.attention.q`, rows: rows[0] },
      { name: `${layer}.attention.k`, rows: rows[1] },
      { name: `${layer}.attention.v`, rows: rows[2] },
    ]);
    plan.linear(`${layer}.attention.dense`, `${hf}.self_attention.dense`, hidden, numHeads * headDim, attention.denseBias);
    const bias = mlp.kind !== 'moe' && mlp.bias;
    plan.linear(`${layer}.mlp.fc`, `${hf}.mlp.dense_h_to_4h`, mlp.intermediateSize, hidden, bias);
    plan.linear(`${layer}.mlp.proj`, `${hf}.mlp.dense_4h_to_h`, hidden, mlp.intermediateSize, bias);
  }
  plan.norm('transformer.ln_f', 'transformer.ln_f', hidden, norm);
  if (!config.tieWordEmbeddings) plan.copy('lm_head.weight', 'lm_head.weight', [vocabSize, hidden]);
  return plan.tensors;
}
