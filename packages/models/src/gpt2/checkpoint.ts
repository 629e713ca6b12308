import type { CheckpointTensorPlan } from '../types';
import type { DecoderConfig } from '../common/decoder';
import { PlanBuilder, contiguousRows } from '../common/plan';

/**
 * GPT-2's Conv1D layers store weights as [in, out]: every linear is transposed, and `attn.c_attn`
 * ([hidden, 3 * hidden]) is cut into q, k and v (consecutive blocks of the output dimension).
 */
export function gpt2CheckpointTensors(config: DecoderConfig): CheckpointTensorPlan[] {
  const { hiddenSize: hidden, vocabSize, norm, mlp } = config;
  const plan = new PlanBuilder();
  plan.copy('transformer.vocab_embedding.weight', 'transformer.wte.weight', [vocabSize, hidden]);
  plan.copy('transformer.position_embedding.weight', 'transformer.wpe.weight', [config.learnedPositions!.tableSize, hidden]);
  for (let i = 0; i < config.numLayers; i++) {
    const layer = `transformer.layers.${i}`;
    const hf = `transformer.h.${i}`;
    plan.norm(`${layer}.input_layernorm`, `${hf}.ln_1`, hidden, norm);
    const rows = contiguousRows([hidden, hidden, hidden]);
    plan.fusedLinear(`${hf}.attn.c_attn`, hidden, 3 * hidden, true, [
      { name: `${layer}.attention.q`, rows: rows[0] },
      { name: `${layer}.attention.k`, rows: rows[1] },
      { name: `${layer}.attention.v`, rows: rows[2] },
    ], true);
    plan.linear(`${layer}.attention.dense`, `${hf}.attn.c_proj`, hidden, hidden, true, true);
    plan.norm(`${layer}.post_layernorm`, `${hf}.ln_2`, hidden, norm);
    plan.linear(`${layer}.mlp.fc`, `${hf}.mlp.c_fc`, mlp.intermediateSize, hidden, true, true);
    plan.linear(`${layer}.mlp.proj`, `${hf}.mlp.c_proj`, hidden, mlp.intermediateSize, true, true);
  }
  plan.norm('transformer.ln_f', 'transformer.ln_f', hidden, norm);
  if (!config.tieWordEmbeddings) plan.copy('lm_head.weight', 'lm_head.weight', [vocabSize, hidden]);
  return plan.tensors;
}
