// The LLaMA variants of the zoo (Qwen3, Gemma, Gemma 2, Phi-3, Mixtral) read their configs with the
// llama family's parser and differ in a few switches of the shared decoder and in their HF tensor layout.
import type { LlamaConfig } from '../llama';
import type { CheckpointTensorPlan } from '../types';
import type { DecoderConfig } from './decoder';
import { PlanBuilder, contiguousRows } from './plan';

/** The shared decoder configured as LLaMA: RMSNorm, full RoPE, SwiGLU, sequential residual. */
export function decoderFromLlama(c: LlamaConfig): DecoderConfig {
  return {
    vocabSize: c.vocabSize,
    maxPositionEmbeddings: c.maxPositionEmbeddings,
    hiddenSize: c.hiddenSize,
    numLayers: c.numLayers,
    numHeads: c.numHeads,
    numKvHeads: c.numKvHeads,
    headDim: c.headDim,
    norm: { kind: 'rms', eps: c.rmsNormEps },
    attention: {
      qkvBias: c.qkvBias,
      denseBias: c.outputBias,
      slidingWindows: c.slidingWindows,
      rotary: { theta: c.ropeTheta, scaling: c.ropeScaling, rotaryDim: c.headDim, interleaved: false },
    },
    mlp: { kind: 'gated', activation: 'silu', intermediateSize: c.intermediateSize, bias: c.mlpBias },
    residual: 'sequential',
    tieWordEmbeddings: c.tieWordEmbeddings,
    lmHeadBias: false,
  };
}

/** How a variant's HF checkpoint differs from LLaMA's `model.layers.N.{self_attn,mlp}.*` layout. */
export interface LlamaLayout {
  /** Phi-3: one `self_attn.qkv_proj` holding [q; k; v] rows. */
  fusedQkv?: boolean;
  /** Phi-3: one `mlp.gate_up_proj` holding [gate; up] rows. */
  fusedGateUp?: boolean;
}

/** The checkpoint plan of a LLaMA-layout model for any switches of the shared decoder it uses. */
export function llamaLikePlan(config: DecoderConfig, layout: LlamaLayout = {}): CheckpointTensorPlan[] {
  const { hiddenSize: hidden, numHeads, numKvHeads, headDim, vocabSize, attention: a, mlp, norm } = config;
  const plan = new PlanBuilder();
  plan.copy('transformer.vocab_embedding.weight', 'model.embed_tokens.weight', [vocabSize, hidden]);
  for (let i = 0; i < config.numLayers; i++) {
    const layer = `transformer.layers.${i}`;
    const hf = `model.layers.${i}`;
    plan.norm(`${layer}.input_layernorm`, `${hf}.input_layernorm`, hidden, norm);
    const [qOut, kvOut] = [numHeads * headDim, numKvHeads * headDim];
    if (layout.fusedQkv) {
      const rows = contiguousRows([qOut, kvOut, kvOut]);
      plan.fusedLinear(`${hf}.self_attn.qkv_proj`, hidden, qOut + 2 * kvOut, a.qkvBias, [
        { name: `${layer}.attention.q`, rows: rows[0] },
        { name: `${layer}.attention.k`, rows: rows[1] },
        { name: `${layer}.attention.v`, rows: rows[2] },
      ]);
    } else {
      plan.linear(`${layer}.attention.q`, `${hf}.self_attn.q_proj`, qOut, hidden, a.qkvBias);
      plan.linear(`${layer}.attention.k`, `${hf}.self_attn.k_proj`, kvOut, hidden, a.qkvBias);
      plan.linear(`${layer}.attention.v`, `${hf}.self_attn.v_proj`, kvOut, hidden, a.qkvBias);
    }
    if (a.qkNorm) {
      plan.copy(`${layer}.attention.q_layernorm.weight`, `${hf}.self_attn.q_norm.weight`, [headDim]);
      plan.copy(`${layer}.attention.k_layernorm.weight`, `${hf}.self_attn.k_norm.weight`, [headDim]);
    }
    plan.linear(`${layer}.attention.dense`, `${hf}.self_attn.o_proj`, hidden, qOut, a.denseBias);
    plan.norm(`${layer}.post_layernorm`, `${hf}.post_attention_layernorm`, hidden, norm);
    if (config.residual === 'sandwich') {
      plan.norm(`${layer}.pre_feedforward_layernorm`, `${hf}.pre_feedforward_layernorm`, hidden, norm);
      plan.norm(`${layer}.post_feedforward_layernorm`, `${hf}.post_feedforward_layernorm`, hidden, norm);
    }
    const inter = mlp.intermediateSize;
    if (mlp.kind === 'moe') {
      // Mixtral: block_sparse_moe.gate is the router; expert e's w1 (gate), w3 (up) and w2 (down) are
      // stacked along dim 0 in expert order.
      const moe = `${hf}.block_sparse_moe`;
      const experts = Array.from({ length: mlp.numExperts }, (_, e) => `${moe}.experts.${e}`);
      plan.copy(`${layer}.mlp.router.weight`, `${moe}.gate.weight`, [mlp.numExperts, hidden]);
      const stack = (name: string, w: string, shape: [number, number]) =>
        plan.gather(`${layer}.mlp.experts.${name}.weight`, [mlp.numExperts * shape[0], shape[1]],
          experts.map((e) => ({ tensor: `${e}.${w}.weight`, shape })));
      stack('gate', 'w1', [inter, hidden]);
      stack('fc', 'w3', [inter, hidden]);
      stack('proj', 'w2', [hidden, inter]);
    } else if (mlp.kind === 'gated') {
      if (layout.fusedGateUp) {
        const rows = contiguousRows([inter, inter]);
        plan.fusedLinear(`${hf}.mlp.gate_up_proj`, hidden, 2 * inter, mlp.bias, [
          { name: `${layer}.mlp.gate`, rows: rows[0] },
          { name: `${layer}.mlp.fc`, rows: rows[1] },
        ]);
      } else {
        plan.linear(`${layer}.mlp.gate`, `${hf}.mlp.gate_proj`, inter, hidden, mlp.bias);
        plan.linear(`${layer}.mlp.fc`, `${hf}.mlp.up_proj`, inter, hidden, mlp.bias);
      }
      plan.linear(`${layer}.mlp.proj`, `${hf}.mlp.down_proj`, hidden, inter, mlp.bias);
    } else {
      throw new Error(`llamaLikePlan: a ${mlp.kind} MLP has no LLaMA layout`);
    }
  }
  plan.norm('transformer.ln_f', 'model.norm', hidden, norm);
  if (!config.tieWordEmbeddings) plan.copy('lm_head.weight', 'lm_head.weight', [vocabSize, hidden]);
  return plan.tensors;
}
