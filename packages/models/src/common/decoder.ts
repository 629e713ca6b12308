// One configurable decoder-only transformer that the zoo's families are instances of. Each family's
// config.ts maps its HF config onto `DecoderConfig`; the differences between GPT-2, NeoX, Falcon, Gemma
// & co. are the switches below, not separate network code. Parameter names follow TensorRT-LLM's unified
// checkpoint, so each family's checkpoint plan maps its HF tensors onto the same canonical names.
import type { RopeScaling } from '@kiln/core';
import {
  Embedding,
  Linear,
  Module,
  Network,
  Tensor,
  add,
  attention,
  gatherLogitRows,
  linear,
  mixtureOfExperts,
  mul,
  positionEmbedding,
  rmsNorm,
  ropeInverseFrequencies,
  rotaryEmbedding,
  softcap,
} from '@kiln/core';
import type { BaseModelConfig } from '../types';
import { Activation, applyActivation } from './activation';
import { Norm, NormConfig } from './norm';

export interface RotaryConfig {
  theta: number;
  scaling: RopeScaling;
  /** Leading features of each head that rotate (partial rotary); the rest pass through. */
  rotaryDim: number;
  /** GPT-J's rotate-every-two pairs (2i, 2i + 1) instead of the (i, i + rotaryDim / 2) halves. */
  interleaved: boolean;
}

export interface DecoderAttentionConfig {
  qkvBias: boolean;
  denseBias: boolean;
  /** Softmax scale; default 1 / sqrt(headDim). */
  scale?: number;
  /** Per layer, a further factor on the scale (GPT-2's scale_attn_by_inverse_layer_idx: 1 / (layer + 1)). */
  scaleByInverseLayer?: boolean;
  /** Gemma 2: cap * tanh(scores / cap) before the softmax. */
  softcap?: number;
  /** Per layer: the sliding window, 0 for full attention. */
  slidingWindows: number[];
  /** Qwen3: RMSNorm over each head of q and k (weights [headDim]) before RoPE. */
  qkNorm?: boolean;
  /** RoPE, or null for models with learned positions or ALiBi. */
  rotary: RotaryConfig | null;
  /** BLOOM: per-head ALiBi slopes (see alibi.ts). */
  alibiSlopes?: number[];
}

export type DecoderMlpConfig =
  /** act(gate(x)) * fc(x) -> proj: SwiGLU / GeGLU. */
  | { kind: 'gated'; activation: Activation; intermediateSize: number; bias: boolean }
  /** act(fc(x)) -> proj: GPT-2 style. */
  | { kind: 'plain'; activation: Activation; intermediateSize: number; bias: boolean }
  /** Mixtral: top-k routed SwiGLU experts. */
  | { kind: 'moe'; activation: 'silu'; intermediateSize: number; numExperts: number; topK: number; normalizeTopK: boolean };

/**
 * How a layer combines attention and MLP with the residual stream:
 * - sequential: h = x + attn(n1(x)); out = h + mlp(n2(h))            (LLaMA, GPT-2, OPT, BLOOM, ...)
 * - parallel-shared-norm: out = x + attn(n1(x)) + mlp(n1(x))          (GPT-J, Phi, Falcon-7B)
 * - parallel: out = x + attn(n1(x)) + mlp(n2(x))                      (GPT-NeoX, Falcon-40B's ln_attn/ln_mlp)
 * - sandwich: h = x + n2(attn(n1(x))); out = h + n4(mlp(n3(h)))       (Gemma 2's pre and post norms)
 */
export type ResidualStyle = 'sequential' | 'parallel-shared-norm' | 'parallel' | 'sandwich';

export interface DecoderConfig extends BaseModelConfig {
  vocabSize: number;
  maxPositionEmbeddings: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  norm: NormConfig;
  /** Multiplies the token embeddings (Gemma: sqrt(hidden), rounded to float32). Default 1. */
  embeddingScale?: number;
  /** Learned absolute positions: table rows [positions + offset] (GPT-2: offset 0, OPT: 2). */
  learnedPositions?: { tableSize: number; offset: number };
  /** BLOOM: a norm right after the embedding. */
  embeddingNorm?: boolean;
  attention: DecoderAttentionConfig;
  mlp: DecoderMlpConfig;
  residual: ResidualStyle;
  /** BLOOM's apply_residual_connection_post_layernorm: the residual is the normed input, not the input. */
  residualFromNormed?: boolean;
  tieWordEmbeddings: boolean;
  lmHeadBias: boolean;
  /** Gemma 2: cap * tanh(logits / cap). */
  finalLogitSoftcap?: number;
}

class DecoderAttention extends Module {
  readonly q: Linear;
  readonly k: Linear;
  readonly v: Linear;
  readonly dense: Linear;
  readonly qNorm?: Tensor;
  readonly kNorm?: Tensor;
  private readonly inverseFrequencies?: number[];

  constructor(network: Network, path: string, private readonly config: DecoderConfig, private readonly layer: number) {
    super(network, path);
    const { hiddenSize, numHeads, numKvHeads, headDim, attention: a } = config;
    this.q = new Linear(network, this.childPath('q'), hiddenSize, numHeads * headDim, { bias: a.qkvBias });
    this.k = new Linear(network, this.childPath('k'), hiddenSize, numKvHeads * headDim, { bias: a.qkvBias });
    this.v = new Linear(network, this.childPath('v'), hiddenSize, numKvHeads * headDim, { bias: a.qkvBias });
    this.dense = new Linear(network, this.childPath('dense'), numHeads * headDim, hiddenSize, { bias: a.denseBias });
    if (a.qkNorm) {
      this.qNorm = this.parameter('q_layernorm.weight', [headDim]);
      this.kNorm = this.parameter('k_layernorm.weight', [headDim]);
    }
    if (a.rotary) this.inverseFrequencies = ropeInverseFrequencies(a.rotary.theta, a.rotary.rotaryDim, a.rotary.scaling);
  }

  forward(x: Tensor, positions: Tensor): Tensor {
    const { numHeads, numKvHeads, headDim, attention: a, norm } = this.config;
    let q = this.q.forward(x);
    let k = this.k.forward(x);
    if (this.qNorm && this.kNorm) {
      // Qwen3 normalises each head of q and k with one shared [headDim] weight.
      q = rmsNorm(q, this.qNorm, { eps: norm.eps, groupSize: headDim });
      k = rmsNorm(k, this.kNorm, { eps: norm.eps, groupSize: headDim });
    }
    if (a.rotary && this.inverseFrequencies) {
      const rope = {
        headDim,
        rotaryDim: a.rotary.rotaryDim,
        interleaved: a.rotary.interleaved,
        inverseFrequencies: this.inverseFrequencies,
      };
      q = rotaryEmbedding(q, positions, { ...rope, numHeads });
      k = rotaryEmbedding(k, positions, { ...rope, numHeads: numKvHeads });
    }
    let scale = a.scale ?? 1 / Math.sqrt(headDim);
    if (a.scaleByInverseLayer) scale /= this.layer + 1;
    const context = attention(q, k, this.v.forward(x), {
      layer: this.layer,
      numHeads,
      numKvHeads,
      headDim,
      scale,
      slidingWindow: a.slidingWindows[this.layer] ?? 0,
      ...(a.softcap ? { softcap: a.softcap } : {}),
      ...(a.alibiSlopes ? { alibiSlopes: a.alibiSlopes } : {}),
    });
    return this.dense.forward(context);
  }
}

class DecoderMlp extends Module {
  private readonly gate?: Linear;
  private readonly fc?: Linear;
  private readonly proj?: Linear;
  private readonly router?: Tensor;
  private readonly experts?: { gate: Tensor; up: Tensor; down: Tensor };

  constructor(network: Network, path: string, private readonly config: DecoderConfig) {
    super(network, path);
    const { hiddenSize: hidden, mlp } = config;
    const inter = mlp.intermediateSize;
    if (mlp.kind === 'moe') {
      const e = mlp.numExperts;
      this.router = this.parameter('router.weight', [e, hidden]);
      // Experts stacked along dim 0: expert i owns rows [i * I, (i + 1) * I) of gate/fc and [i * H, ...) of proj.
      this.experts = {
        gate: this.parameter('experts.gate.weight', [e * inter, hidden]),
        up: this.parameter('experts.fc.weight', [e * inter, hidden]),
        down: this.parameter('experts.proj.weight', [e * hidden, inter]),
      };
      return;
    }
    if (mlp.kind === 'gated') this.gate = new Linear(network, this.childPath('gate'), hidden, inter, { bias: mlp.bias });
    this.fc = new Linear(network, this.childPath('fc'), hidden, inter, { bias: mlp.bias });
    this.proj = new Linear(network, this.childPath('proj'), inter, hidden, { bias: mlp.bias });
  }

  forward(x: Tensor): Tensor {
    const mlp = this.config.mlp;
    if (mlp.kind === 'moe') {
      return mixtureOfExperts(x, this.router!, this.experts!, {
        numExperts: mlp.numExperts,
        topK: mlp.topK,
        normalizeTopK: mlp.normalizeTopK,
      });
    }
    const up = this.fc!.forward(x);
    const hidden = mlp.kind === 'gated' ? mul(applyActivation(this.gate!.forward(x), mlp.activation), up) : applyActivation(up, mlp.activation);
    return this.proj!.forward(hidden);
  }
}

class DecoderLayer extends Module {
  private readonly inputLayernorm: Norm;
  private readonly postLayernorm?: Norm;
  private readonly preFeedforwardLayernorm?: Norm;
  private readonly postFeedforwardLayernorm?: Norm;
  private readonly attention: DecoderAttention;
  private readonly mlp: DecoderMlp;

  constructor(network: Network, path: string, private readonly config: DecoderConfig, layer: number) {
    super(network, path);
    const norm = (name: string) => Norm.create(network, this.childPath(name), config.hiddenSize, config.norm);
    this.inputLayernorm = norm('input_layernorm');
    if (config.residual !== 'parallel-shared-norm') this.postLayernorm = norm('post_layernorm');
    if (config.residual === 'sandwich') {
      this.preFeedforwardLayernorm = norm('pre_feedforward_layernorm');
      this.postFeedforwardLayernorm = norm('post_feedforward_layernorm');
    }
    this.attention = new DecoderAttention(network, this.childPath('attention'), config, layer);
    this.mlp = new DecoderMlp(network, this.childPath('mlp'), config);
  }

  forward(x: Tensor, positions: Tensor): Tensor {
    const normed = this.inputLayernorm.forward(x);
    const attended = this.attention.forward(normed, positions);
    switch (this.config.residual) {
      case 'sequential': {
        const h = add(this.config.residualFromNormed ? normed : x, attended);
        const normedH = this.postLayernorm!.forward(h);
        return add(this.config.residualFromNormed ? normedH : h, this.mlp.forward(normedH));
      }
      case 'parallel-shared-norm':
        return add(add(x, attended), this.mlp.forward(normed));
      case 'parallel':
        return add(add(x, attended), this.mlp.forward(this.postLayernorm!.forward(x)));
      case 'sandwich': {
        const h = add(x, this.postLayernorm!.forward(attended));
        return add(h, this.postFeedforwardLayernorm!.forward(this.mlp.forward(this.preFeedforwardLayernorm!.forward(h))));
      }
    }
  }
}

/** Embedding (+ learned positions, + embedding norm), N decoder layers, final norm, LM head. */
export function buildDecoderNetwork(config: DecoderConfig, name: string): Network {
  const network = new Network(name);
  const inputIds = network.input('input_ids', 'int32', ['tokens']);
  const positions = network.input('position_ids', 'int32', ['tokens']);

  const embedding = new Embedding(network, 'transformer.vocab_embedding', config.vocabSize, config.hiddenSize);
  let hidden = embedding.forward(inputIds, config.embeddingScale);
  if (config.learnedPositions) {
    const table = network.parameter('transformer.position_embedding.weight', [config.learnedPositions.tableSize, config.hiddenSize]);
    hidden = add(hidden, positionEmbedding(positions, table, { offset: config.learnedPositions.offset }));
  }
  if (config.embeddingNorm) hidden = Norm.create(network, 'transformer.ln_embed', config.hiddenSize, config.norm).forward(hidden);
  for (let layer = 0; layer < config.numLayers; layer++) {
    hidden = new DecoderLayer(network, `transformer.layers.${layer}`, config, layer).forward(hidden, positions);
  }
  // Only the rows the LM head needs go through the final norm and the head.
  const normed = Norm.create(network, 'transformer.ln_f', config.hiddenSize, config.norm).forward(gatherLogitRows(hidden));
  const lmHead = config.tieWordEmbeddings ? embedding.weight : network.parameter('lm_head.weight', [config.vocabSize, config.hiddenSize]);
  const lmHeadBias = config.lmHeadBias ? network.parameter('lm_head.bias', [config.vocabSize]) : undefined;
  let logits = linear(normed, lmHead, lmHeadBias);
  if (config.finalLogitSoftcap) logits = softcap(logits, { cap: config.finalLogitSoftcap });
  network.output('logits', logits);
  return network;
}
