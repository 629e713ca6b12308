import {
  Embedding,
  Linear,
  Module,
  Network,
  RmsNorm,
  Tensor,
  add,
  attention,
  gatherLogitRows,
  linear,
  mul,
  ropeInverseFrequencies,
  rotaryEmbedding,
  silu,
} from '@kiln/core';
import type { LlamaConfig } from './config';

// Parameter names follow TensorRT-LLM's unified checkpoint (transformer.layers.N.attention.q, ...).

class LlamaAttention extends Module {
  readonly q: Linear;
  readonly k: Linear;
  readonly v: Linear;
  readonly dense: Linear;
  private readonly inverseFrequencies: number[];

  constructor(network: Network, path: string, private readonly config: LlamaConfig, private readonly layer: number) {
    super(network, path);
    const { hiddenSize, numHeads, numKvHeads, headDim, qkvBias, outputBias } = config;
    this.q = new Linear(network, this.childPath('q'), hiddenSize, numHeads * headDim, { bias: qkvBias });
    this.k = new Linear(network, this.childPath('k'), hiddenSize, numKvHeads * headDim, { bias: qkvBias });
    this.v = new Linear(network, this.childPath('v'), hiddenSize, numKvHeads * headDim, { bias: qkvBias });
    this.dense = new Linear(network, this.childPath('dense'), numHeads * headDim, hiddenSize, { bias: outputBias });
    this.inverseFrequencies = ropeInverseFrequencies(config.ropeTheta, headDim, config.ropeScaling);
  }

  forward(x: Tensor, positions: Tensor): Tensor {
    const { numHeads, numKvHeads, headDim } = this.config;
    const rope = { headDim, inverseFrequencies: this.inverseFrequencies };
    const q = rotaryEmbedding(this.q.forward(x), positions, { ...rope, numHeads });
    const k = rotaryEmbedding(this.k.forward(x), positions, { ...rope, numHeads: numKvHeads });
    const context = attention(q, k, this.v.forward(x), {
      layer: this.layer,
      numHeads,
      numKvHeads,
      headDim,
      slidingWindow: this.config.slidingWindows[this.layer],
    });
    return this.dense.forward(context);
  }
}

class LlamaMlp extends Module {
  readonly gate: Linear;
  readonly fc: Linear;
  readonly proj: Linear;

  constructor(network: Network, path: string, config: LlamaConfig) {
    super(network, path);
    const { hiddenSize, intermediateSize, mlpBias } = config;
    this.gate = new Linear(network, this.childPath('gate'), hiddenSize, intermediateSize, { bias: mlpBias });
    this.fc = new Linear(network, this.childPath('fc'), hiddenSize, intermediateSize, { bias: mlpBias });
    this.proj = new Linear(network, this.childPath('proj'), intermediateSize, hiddenSize, { bias: mlpBias });
  }

  /** SwiGLU: down(silu(gate(x)) * up(x)). */
  forward(x: Tensor): Tensor {
    return this.proj.forward(mul(silu(this.gate.forward(x)), this.fc.forward(x)));
  }
}

class LlamaDecoderLayer extends Module {
  readonly inputLayernorm: RmsNorm;
  readonly attention: LlamaAttention;
  readonly postLayernorm: RmsNorm;
  readonly mlp: LlamaMlp;

  constructor(network: Network, path: string, config: LlamaConfig, layer: number) {
    super(network, path);
    this.inputLayernorm = new RmsNorm(network, this.childPath('input_layernorm'), config.hiddenSize, config.rmsNormEps);
    this.attention = new LlamaAttention(network, this.childPath('attention'), config, layer);
    this.postLayernorm = new RmsNorm(network, this.childPath('post_layernorm'), config.hiddenSize, config.rmsNormEps);
    this.mlp = new LlamaMlp(network, this.childPath('mlp'), config);
  }

  forward(hidden: Tensor, positions: Tensor): Tensor {
    const afterAttention = add(hidden, this.attention.forward(this.inputLayernorm.forward(hidden), positions));
    return add(afterAttention, this.mlp.forward(this.postLayernorm.forward(afterAttention)));
  }
}

/** LlamaForCausalLM and its relatives: embedding, N pre-norm decoder layers, final norm, LM head. */
export function buildLlamaNetwork(config: LlamaConfig): Network {
  const network = new Network('llama');
  const inputIds = network.input('input_ids', 'int32', ['tokens']);
  const positions = network.input('position_ids', 'int32', ['tokens']);

  const embedding = new Embedding(network, 'transformer.vocab_embedding', config.vocabSize, config.hiddenSize);
  let hidden = embedding.forward(inputIds);
  for (let layer = 0; layer < config.numLayers; layer++) {
    hidden = new LlamaDecoderLayer(network, `transformer.layers.${layer}`, config, layer).forward(hidden, positions);
  }
  // Only the rows the LM head needs go through the final norm and the head.
  const finalNorm = new RmsNorm(network, 'transformer.ln_f', config.hiddenSize, config.rmsNormEps);
  const normed = finalNorm.forward(gatherLogitRows(hidden));
  const lmHead = config.tieWordEmbeddings
    ? embedding.weight
    : network.parameter('lm_head.weight', [config.vocabSize, config.hiddenSize]);
  network.output('logits', linear(normed, lmHead));
  return network;
}
