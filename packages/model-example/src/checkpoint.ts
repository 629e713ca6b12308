import type { CheckpointTensorPlan } from '@kiln/models';
import type { TinyLlamaConfig } from './config';

/**
 * Every tensor of the Kiln checkpoint: its name (the network's parameter name), its shape, and the HF
 * tensor(s) it is read from. Conversion checks each HF tensor's shape against `shape` and fails naming
 * both; HF tensors not listed here (and not in `ignoredTensors`) fail the conversion too.
 */
export function tinyLlamaCheckpointTensors(config: TinyLlamaConfig): CheckpointTensorPlan[] {
  const { hiddenSize: h, intermediateSize: inter, numHeads, numKvHeads, headDim, vocabSize } = config;
  const plan: CheckpointTensorPlan[] = [];
  const copy = (name: string, hfName: string, shape: number[]) => plan.push({ name, shape, sources: [{ tensor: hfName, shape }] });

  copy('transformer.vocab_embedding.weight', 'model.embed_tokens.weight', [vocabSize, h]);
  for (let i = 0; i < config.numLayers; i++) {
    const layer = `transformer.layers.${i}`;
    const hf = `model.layers.${i}`;
    copy(`${layer}.input_layernorm.weight`, `${hf}.input_layernorm.weight`, [h]);
    copy(`${layer}.attention.q.weight`, `${hf}.self_attn.q_proj.weight`, [numHeads * headDim, h]);
    copy(`${layer}.attention.k.weight`, `${hf}.self_attn.k_proj.weight`, [numKvHeads * headDim, h]);
    copy(`${layer}.attention.v.weight`, `${hf}.self_attn.v_proj.weight`, [numKvHeads * headDim, h]);
    copy(`${layer}.attention.dense.weight`, `${hf}.self_attn.o_proj.weight`, [h, numHeads * headDim]);
    copy(`${layer}.post_layernorm.weight`, `${hf}.post_attention_layernorm.weight`, [h]);
    copy(`${layer}.mlp.gate.weight`, `${hf}.mlp.gate_proj.weight`, [inter, h]);
    copy(`${layer}.mlp.fc.weight`, `${hf}.mlp.up_proj.weight`, [inter, h]);
    copy(`${layer}.mlp.proj.weight`, `${hf}.mlp.down_proj.weight`, [h, inter]);
  }
  copy('transformer.ln_f.weight', 'model.norm.weight', [h]);
  copy('lm_head.weight', 'lm_head.weight', [vocabSize, h]);
  return plan;
}
