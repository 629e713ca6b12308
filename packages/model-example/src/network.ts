import {
  Network,
  Tensor,
  add,
  attention,
  embedding,
  gatherLogitRows,
  linear,
  mul,
  rmsNorm,
  ropeInverseFrequencies,
  rotaryEmbedding,
  silu,
} from '@kiln/core';
import type { TinyLlamaConfig } from './config';

/**
 * The network, written with @kiln/core's functional ops only. Parameter names must be exactly the
 * checkpoint plan's tensor names (checkpoint.ts): the builder binds weights by name.
 */
export function buildTinyLlamaNetwork(config: TinyLlamaConfig): Network {
  const { hiddenSize: h, intermediateSize: inter, numHeads, numKvHeads, headDim, rmsNormEps: eps } = config;
  const network = new Network('tiny_llama');
  const inputIds = network.input('input_ids', 'int32', ['tokens']);
  const positions = network.input('position_ids', 'int32', ['tokens']);
  const weight = (name: string, shape: number[]) => network.parameter(name, shape);
  const inverseFrequencies = ropeInverseFrequencies(config.ropeTheta, headDim, config.ropeScaling);
  const rope = (x: Tensor, heads: number) => rotaryEmbedding(x, positions, { numHeads: heads, headDim, inverseFrequencies });

  const table = weight('transformer.vocab_embedding.weight', [config.vocabSize, h]);
  let hidden = embedding(inputIds, table);
  for (let layer = 0; layer < config.numLayers; layer++) {
    const p = `transformer.layers.${layer}`;
    // Attention block: pre-norm, RoPE on q and k, grouped-query causal attention over the KV cache.
    const x = rmsNorm(hidden, weight(`${p}.input_layernorm.weight`, [h]), { eps });
    const q = rope(linear(x, weight(`${p}.attention.q.weight`, [numHeads * headDim, h])), numHeads);
    const k = rope(linear(x, weight(`${p}.attention.k.weight`, [numKvHeads * headDim, h])), numKvHeads);
    const v = linear(x, weight(`${p}.attention.v.weight`, [numKvHeads * headDim, h]));
    const context = attention(q, k, v, { layer, numHeads, numKvHeads, headDim });
    hidden = add(hidden, linear(context, weight(`${p}.attention.dense.weight`, [h, numHeads * headDim])));
    // MLP block: SwiGLU.
    const y = rmsNorm(hidden, weight(`${p}.post_layernorm.weight`, [h]), { eps });
    const gate = silu(linear(y, weight(`${p}.mlp.gate.weight`, [inter, h])));
    const up = linear(y, weight(`${p}.mlp.fc.weight`, [inter, h]));
    hidden = add(hidden, linear(mul(gate, up), weight(`${p}.mlp.proj.weight`, [h, inter])));
  }
  // Only the rows whose logits are wanted go through the final norm and the LM head.
  const normed = rmsNorm(gatherLogitRows(hidden), weight('transformer.ln_f.weight', [h]), { eps });
  network.output('logits', linear(normed, weight('lm_head.weight', [config.vocabSize, h])));
  return network;
}
