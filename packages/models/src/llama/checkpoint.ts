import type { CheckpointTensorPlan } from '../types';
import type { LlamaConfig } from './config';

/** The Kiln checkpoint's tensors and the HF (transformers) tensors each comes from. */
export function llamaCheckpointTensors(config: LlamaConfig): CheckpointTensorPlan[] {
  const { hiddenSize: hidden, intermediateSize: inter, numHeads, numKvHeads, headDim, vocabSize } = config;
  const plan: CheckpointTensorPlan[] = [];
  const copy = (name: string, hfName: string, shape: number[]) =>
    plan.push({ name, shape, sources: [{ tensor: hfName, shape }] });
  const linear = (name: string, hfName: string, outFeatures: number, inFeatures: number, bias: boolean) => {
    copy(`${name}.weight`, `${hfName}.weight`, [outFeatures, inFeatures]);
    if (bias) copy(`${name}.bias`, `${hfName}.bias`, [outFeatures]);
  };

  copy('transformer.vocab_embedding.weight', 'model.embed_tokens.weight', [vocabSize, hidden]);
  for (let i = 0; i < config.numLayers; i++) {
    const layer = `transformer.layers.${i}`;
    const hf = `model.layers.${i}`;
    copy(`${layer}.input_layernorm.weight`, `${hf}.input_layernorm.weight`, [hidden]);
    linear(`${layer}.attention.q`, `${hf}.self_attn.q_proj`, numHeads * headDim, hidden, config.qkvBias);
    linear(`${layer}.attention.k`, `${hf}.self_attn.k_proj`, numKvHeads * headDim, hidden, config.qkvBias);
    linear(`${layer}.attention.v`, `${hf}.self_attn.v_proj`, numKvHeads * headDim, hidden, config.qkvBias);
    linear(`${layer}.attention.dense`, `${hf}.self_attn.o_proj`, hidden, numHeads * headDim, config.outputBias);
    copy(`${layer}.post_layernorm.weight`, `${hf}.post_attention_layernorm.weight`, [hidden]);
    linear(`${layer}.mlp.gate`, `${hf}.mlp.gate_proj`, inter, hidden, config.mlpBias);
    linear(`${layer}.mlp.fc`, `${hf}.mlp.up_proj`, inter, hidden, config.mlpBias);
    linear(`${layer}.mlp.proj`, `${hf}.mlp.down_proj`, hidden, inter, config.mlpBias);
  }
  copy('transformer.ln_f.weight', 'model.norm.weight', [hidden]);
  if (!config.tieWordEmbeddings) copy('lm_head.weight', 'lm_head.weight', [vocabSize, hidden]);
  return plan;
}
