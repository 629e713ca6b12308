// The model families Kiln moves between GGUF and Hugging Face layouts: llama.cpp's metadata keys and
// tensor names (llama.cpp src/llama-arch.cpp, LLM_KV_* and LLM_TENSOR_*) against transformers' config
// keys and tensor names. One table serves the import (GGUF -> HF folder -> Kiln checkpoint) and the
// export (Kiln checkpoint -> HF names through the zoo's checkpoint plan -> GGUF).
import { ConfigError } from '@kiln/models';
import type { GgufModelFile } from './gguf-file';

export interface GgufArchitecture {
  /** `general.architecture` as llama.cpp writes it. */
  gguf: string;
  /** The Hugging Face class the zoo registers for it. */
  hfClass: string;
  modelType: string;
  /**
   * llama.cpp's converter permutes the q/k rows of this family (LlamaModel.permute: its rope rotates
   * adjacent pairs, transformers' rotates halves); families on llama.cpp's NEOX rope keep HF's rows.
   */
  ropePermuted: boolean;
  /** The norm's epsilon key: `attention.layer_norm_rms_epsilon` (RMSNorm) or `attention.layer_norm_epsilon`. */
  norm: 'rms' | 'layer';
  /** Per-layer tensors named differently from the llama family (llama.cpp name after `blk.N.`, HF after `model.layers.N.`). */
  layerTensors?: ReadonlyArray<readonly [string, string]>;
  globalTensors?: ReadonlyArray<readonly [string, string]>;
  /**
   * Gemma: llama.cpp's converter stores its RMSNorm weights as 1 + w (transformers' GemmaRMSNorm
   * multiplies by 1 + w, llama.cpp's by the weight): the import subtracts it, the export adds it.
   */
  normWeightOffset?: number;
  /** transformers' `hidden_act` of llama.cpp's graph for this family. Default silu. */
  activation?: string;
  /** transformers' prefix of the per-layer tensors. Default `model.layers`. */
  hfLayerPrefix?: string;
  /**
   * GPT-2: the weights transformers stores as Conv1D [in, out], which llama.cpp's converter transposes to
   * [out, in] (the import transposes them back; Kiln's checkpoint already holds them [out, in]).
   */
  conv1dWeights?: RegExp;
}

// GPT-2: learned positions, LayerNorms with biases, fused q/k/v (c_attn) and a plain GELU (tanh) MLP, all
// Conv1D; llama.cpp's gpt2 graph runs exactly that, attention scaled by 1 / sqrt(head size).
const GPT2: GgufArchitecture = {
  gguf: 'gpt2',
  hfClass: 'GPT2LMHeadModel',
  modelType: 'gpt2',
  ropePermuted: false,
  norm: 'layer',
  activation: 'gelu_new',
  hfLayerPrefix: 'transformer.h',
  conv1dWeights: /\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$/,
  layerTensors: [
    ['attn_norm.weight', 'ln_1.weight'],
    ['attn_norm.bias', 'ln_1.bias'],
    ['attn_qkv.weight', 'attn.c_attn.weight'],
    ['attn_qkv.bias', 'attn.c_attn.bias'],
    ['attn_output.weight', 'attn.c_proj.weight'],
    ['attn_output.bias', 'attn.c_proj.bias'],
    ['ffn_norm.weight', 'ln_2.weight'],
    ['ffn_norm.bias', 'ln_2.bias'],
    ['ffn_up.weight', 'mlp.c_fc.weight'],
    ['ffn_up.bias', 'mlp.c_fc.bias'],
    ['ffn_down.weight', 'mlp.c_proj.weight'],
    ['ffn_down.bias', 'mlp.c_proj.bias'],
  ],
  globalTensors: [
    ['token_embd.weight', 'transformer.wte.weight'],
    ['position_embd.weight', 'transformer.wpe.weight'],
    ['output_norm.weight', 'transformer.ln_f.weight'],
    ['output_norm.bias', 'transformer.ln_f.bias'],
  ],
};
export const GGUF_ARCHITECTURES: readonly GgufArchitecture[] = [
  // Mistral files are written as "llama" by llama.cpp's converter (MistralForCausalLM -> LlamaModel).
  { gguf: 'llama', hfClass: 'LlamaForCausalLM', modelType: 'llama', ropePermuted: true, norm: 'rms' },
  { gguf: 'qwen2', hfClass: 'Qwen2ForCausalLM', modelType: 'qwen2', ropePermuted: false, norm: 'rms' },
  { gguf: 'qwen3', hfClass: 'Qwen3ForCausalLM', modelType: 'qwen3', ropePermuted: false, norm: 'rms' },
  // GeGLU (tanh GELU), tied embeddings scaled by sqrt(hidden) in both graphs, norms stored as 1 + w.
  {
    gguf: 'gemma',
    hfClass: 'GemmaForCausalLM',
    modelType: 'gemma',
    ropePermuted: false,
    norm: 'rms',
    normWeightOffset: 1,
    activation: 'gelu_pytorch_tanh',
  },
  // Phi-3: q/k/v and gate/up fused in one tensor each (in transformers' checkpoint too); partial rope and a
  // sliding window on every layer.
  {
    gguf: 'phi3',
    hfClass: 'Phi3ForCausalLM',
    modelType: 'phi3',
    ropePermuted: false,
    norm: 'rms',
    layerTensors: [
      ['attn_qkv.weight', 'self_attn.qkv_proj.weight'],
      ['ffn_up.weight', 'mlp.gate_up_proj.weight'],
    ],
  },
  // Gemma 2: Gemma's layout plus norms after attention and around the MLP, soft-capping, and a sliding
  // window on every even layer (llama.cpp's swa pattern 2, transformers' default layer_types).
  {
    gguf: 'gemma2',
    hfClass: 'Gemma2ForCausalLM',
    modelType: 'gemma2',
    ropePermuted: false,
    norm: 'rms',
    normWeightOffset: 1,
    activation: 'gelu_pytorch_tanh',
    layerTensors: [
      ['post_attention_norm.weight', 'post_attention_layernorm.weight'],
      ['ffn_norm.weight', 'pre_feedforward_layernorm.weight'],
      ['post_ffw_norm.weight', 'post_feedforward_layernorm.weight'],
    ],
  },
  // LayerNorms with biases, a plain GELU MLP (c_fc -> ffn_up, c_proj -> ffn_down).
  {
    gguf: 'starcoder2',
    hfClass: 'Starcoder2ForCausalLM',
    modelType: 'starcoder2',
    ropePermuted: false,
    norm: 'layer',
    activation: 'gelu_pytorch_tanh',
    layerTensors: [
      ['attn_norm.bias', 'input_layernorm.bias'],
      ['ffn_norm.bias', 'post_attention_layernorm.bias'],
      ['ffn_up.weight', 'mlp.c_fc.weight'],
      ['ffn_up.bias', 'mlp.c_fc.bias'],
      ['ffn_down.weight', 'mlp.c_proj.weight'],
      ['ffn_down.bias', 'mlp.c_proj.bias'],
    ],
    globalTensors: [['output_norm.bias', 'model.norm.bias']],
  },
  GPT2,
];


export function ggufArchitectureByName(file: string, name: string): GgufArchitecture {
  const arch = GGUF_ARCHITECTURES.find((a) => a.gguf === name);
  if (!arch) {
    throw new ConfigError(
      file,
      'general.architecture',
      `"${name}" is not a GGUF architecture Kiln imports (supported: ${GGUF_ARCHITECTURES.map((a) => a.gguf).join(', ')})`,
    );
  }
  return arch;
}

export function ggufArchitectureByHfClass(hfClass: string): GgufArchitecture | undefined {
  return GGUF_ARCHITECTURES.find((a) => a.hfClass === hfClass);
}

// Per-layer tensors: llama.cpp's name (after `blk.N.`) and transformers' (after `model.layers.N.`).
const LAYER_TENSORS: ReadonlyArray<readonly [string, string]> = [
  ['attn_norm.weight', 'input_layernorm.weight'],
  ['attn_q.weight', 'self_attn.q_proj.weight'],
  ['attn_q.bias', 'self_attn.q_proj.bias'],
  ['attn_k.weight', 'self_attn.k_proj.weight'],
  ['attn_k.bias', 'self_attn.k_proj.bias'],
  ['attn_v.weight', 'self_attn.v_proj.weight'],
  ['attn_v.bias', 'self_attn.v_proj.bias'],
  ['attn_output.weight', 'self_attn.o_proj.weight'],
  ['attn_output.bias', 'self_attn.o_proj.bias'],
  ['attn_q_norm.weight', 'self_attn.q_norm.weight'],
  ['attn_k_norm.weight', 'self_attn.k_norm.weight'],
  ['ffn_norm.weight', 'post_attention_layernorm.weight'],
  ['ffn_gate.weight', 'mlp.gate_proj.weight'],
  ['ffn_gate.bias', 'mlp.gate_proj.bias'],
  ['ffn_up.weight', 'mlp.up_proj.weight'],
  ['ffn_up.bias', 'mlp.up_proj.bias'],
  ['ffn_down.weight', 'mlp.down_proj.weight'],
  ['ffn_down.bias', 'mlp.down_proj.bias'],
];
const GLOBAL_TENSORS: ReadonlyArray<readonly [string, string]> = [
  ['token_embd.weight', 'model.embed_tokens.weight'],
  ['output_norm.weight', 'model.norm.weight'],
  ['output.weight', 'lm_head.weight'],
];

interface NameTables {
  ggufToHfLayer: Map<string, string>;
  hfToGgufLayer: Map<string, string>;
  ggufToHfGlobal: Map<string, string>;
  hfToGgufGlobal: Map<string, string>;
}
const tables = new Map<GgufArchitecture, NameTables>();

/** The family's name maps: the llama family's, with its own entries replacing those of the same names. */
function namesOf(arch: GgufArchitecture): NameTables {
  let t = tables.get(arch);
  if (!t) {
    const layer = new Map(LAYER_TENSORS);
    const hfLayer = new Set((arch.layerTensors ?? []).map(([, h]) => h));
    for (const [g, h] of layer) if (hfLayer.has(h)) layer.delete(g);
    for (const [g, h] of arch.layerTensors ?? []) layer.set(g, h);
    const global = new Map([...GLOBAL_TENSORS, ...(arch.globalTensors ?? [])]);
    t = {
      ggufToHfLayer: layer,
      hfToGgufLayer: new Map([...layer].map(([g, h]) => [h, g])),
      ggufToHfGlobal: global,
      hfToGgufGlobal: new Map([...global].map(([g, h]) => [h, g])),
    };
    tables.set(arch, t);
  }
  return t;
}

/** transformers' name of a llama.cpp tensor of this family, or undefined for one it does not have. */
export function hfTensorName(arch: GgufArchitecture, ggufName: string): string | undefined {
  const names = namesOf(arch);
  const global = names.ggufToHfGlobal.get(ggufName);
  if (global) return global;
  const m = /^blk\.(0|[1-9][0-9]{0,5})\.(.+)$/.exec(ggufName);
  const inner = m && names.ggufToHfLayer.get(m[2]);
  return inner ? `${arch.hfLayerPrefix ?? 'model.layers'}.${m[1]}.${inner}` : undefined;
}

/** llama.cpp's name of a transformers tensor of this family, or undefined. */
export function ggufTensorName(arch: GgufArchitecture, hfName: string): string | undefined {
  const names = namesOf(arch);
  const global = names.hfToGgufGlobal.get(hfName);
  if (global) return global;
  const prefix = arch.hfLayerPrefix ?? 'model.layers';
  const m = hfName.startsWith(`${prefix}.`) ? /^(0|[1-9][0-9]{0,5})\.(.+)$/.exec(hfName.slice(prefix.length + 1)) : null;
  const inner = m && names.hfToGgufLayer.get(m[2]);
  return inner ? `blk.${m[1]}.${inner}` : undefined;
}

/** What the family adds to this (HF-named) tensor's values in GGUF (Gemma's norm weights: 1), or 0. */
export function ggufValueOffset(arch: GgufArchitecture, hfName: string): number {
  return arch.normWeightOffset !== undefined && /(layernorm|^model\.norm)\.weight$/.test(hfName) ? arch.normWeightOffset : 0;
}

/** Whether this (HF-named) tensor has llama.cpp's rope permutation in this family, and for how many heads. */
export function ropePermutationHeads(
  arch: GgufArchitecture,
  hfName: string,
  heads: { numHeads: number; numKvHeads: number },
): number {
  if (!arch.ropePermuted) return 0;
  if (/\.self_attn\.q_proj\.(weight|bias)$/.test(hfName)) return heads.numHeads;
  if (/\.self_attn\.k_proj\.(weight|bias)$/.test(hfName)) return heads.numKvHeads;
  return 0;
}

/**
 * transformers' config.json for a GGUF file of this family, from llama.cpp's hyperparameter keys
 * (`<arch>.embedding_length`, ...). Everything the network depends on is read or refused: a file whose
 * rope Kiln cannot reproduce (llama.cpp's rope_freqs tensor, YaRN) is an error naming the key.
 */
export function hfConfigFromGguf(file: GgufModelFile, arch: GgufArchitecture): Record<string, unknown> {
  if (arch.gguf === 'gpt2') return gpt2ConfigFromGguf(file, arch);
  const k = (key: string) => `${arch.gguf}.${key}`;
  const hidden = file.positiveInteger(k('embedding_length'));
  const heads = file.positiveInteger(k('attention.head_count'));
  const kvHeads = file.optionalInteger(k('attention.head_count_kv'), 1) ?? heads;
  const headDim = file.optionalInteger(k('attention.key_length'), 1) ?? hidden / heads;
  if (!Number.isInteger(headDim)) {
    throw new ConfigError(file.path, k('embedding_length'), `${hidden} is not a multiple of ${k('attention.head_count')} ${heads}`);
  }
  const valueLength = file.optionalInteger(k('attention.value_length'), 1) ?? headDim;
  if (valueLength !== headDim) {
    throw new ConfigError(file.path, k('attention.value_length'), `${valueLength} differs from the key length ${headDim}; not supported`);
  }
  const ropeDims = file.optionalInteger(k('rope.dimension_count'), 1) ?? headDim;
  if (ropeDims !== headDim && !(arch.gguf === 'phi3' && ropeDims < headDim && ropeDims % 2 === 0)) {
    throw new ConfigError(file.path, k('rope.dimension_count'), `${ropeDims}: partial rotary embeddings are not supported in ${arch.gguf} (head size ${headDim})`);
  }
  const embedding = file.tensors.get('token_embd.weight');
  if (!embedding || embedding.shape.length !== 2) {
    throw new ConfigError(file.path, 'token_embd.weight', 'missing or not 2-D (the token embedding is required)');
  }
  const config: Record<string, unknown> = {
    architectures: [arch.hfClass],
    model_type: arch.modelType,
    hidden_size: hidden,
    intermediate_size: file.positiveInteger(k('feed_forward_length')),
    num_hidden_layers: file.positiveInteger(k('block_count')),
    num_attention_heads: heads,
    num_key_value_heads: kvHeads,
    head_dim: headDim,
    hidden_act: arch.activation ?? 'silu',
    max_position_embeddings: file.optionalInteger(k('context_length'), 1) ?? 2048,
    ...(arch.norm === 'rms'
      ? { rms_norm_eps: file.optionalPositive(k('attention.layer_norm_rms_epsilon')) ?? 1e-6 }
      : { norm_epsilon: file.optionalPositive(k('attention.layer_norm_epsilon')) ?? 1e-5 }),
    rope_theta: file.optionalPositive(k('rope.freq_base')) ?? 10000,
    vocab_size: embedding.shape[0],
    tie_word_embeddings: !file.tensors.has('output.weight'),
  };
  if (arch.gguf === 'llama') {
    config.attention_bias = file.tensors.has('blk.0.attn_q.bias');
    config.mlp_bias = file.tensors.has('blk.0.ffn_up.bias');
  }
  if (arch.gguf === 'phi3') {
    if (ropeDims !== headDim) config.partial_rotary_factor = ropeDims / headDim;
    const window = file.optionalInteger(k('attention.sliding_window'), 1);
    config.sliding_window = window ?? null;
    if (file.tensors.has('rope_factors_long.weight')) {
      throw new ConfigError(file.path, 'rope_factors_long.weight', "Phi-3's LongRoPE factors are not supported yet");
    }
  }
  if (arch.gguf === 'gemma2') {
    const window = file.optionalInteger(k('attention.sliding_window'), 1);
    if (window !== undefined) config.sliding_window = window;
    for (const key of ['attn_logit_softcapping', 'final_logit_softcapping']) {
      const cap = file.optionalPositive(k(key));
      if (cap !== undefined) config[key] = cap;
    }
    // llama.cpp scales queries by 1 / sqrt(head size) for Gemma 2 (2B, 9B; 27B differs and is refused
    // at export): transformers' query_pre_attn_scalar.
    config.query_pre_attn_scalar = headDim;
  }
  if (arch.gguf === 'starcoder2') {
    // llama.cpp's starcoder2 graph: biases everywhere or nowhere.
    config.use_bias = file.tensors.has('blk.0.attn_q.bias');
  }
  if (file.tensors.has('rope_freqs.weight')) {
    throw new ConfigError(file.path, 'rope_freqs.weight', "llama.cpp's rope frequency factors (Llama 3.1 rope scaling) are not supported yet");
  }
  const scaling = file.optionalString(k('rope.scaling.type'));
  if (scaling !== undefined && scaling !== 'none') {
    if (scaling !== 'linear') throw new ConfigError(file.path, k('rope.scaling.type'), `"${scaling}" is not supported (none or linear)`);
    const factor = file.optionalPositive(k('rope.scaling.factor'));
    if (factor === undefined) throw new ConfigError(file.path, k('rope.scaling.factor'), 'missing for linear rope scaling');
    config.rope_scaling = { rope_type: 'linear', factor };
  }
  return config;
}

/** transformers' GPT2Config for a gpt2 GGUF file (llama.cpp's LLM_ARCH_GPT2 keys). */
function gpt2ConfigFromGguf(file: GgufModelFile, arch: GgufArchitecture): Record<string, unknown> {
  const k = (key: string) => `${arch.gguf}.${key}`;
  const hidden = file.positiveInteger(k('embedding_length'));
  const heads = file.positiveInteger(k('attention.head_count'));
  const kvHeads = file.optionalInteger(k('attention.head_count_kv'), 1) ?? heads;
  if (kvHeads !== heads) throw new ConfigError(file.path, k('attention.head_count_kv'), `${kvHeads}: GPT-2 has no grouped-query attention (${heads} heads)`);
  if (hidden % heads !== 0) throw new ConfigError(file.path, k('embedding_length'), `${hidden} is not a multiple of ${k('attention.head_count')} ${heads}`);
  const embedding = file.tensors.get('token_embd.weight');
  if (!embedding || embedding.shape.length !== 2) throw new ConfigError(file.path, 'token_embd.weight', 'missing or not 2-D (the token embedding is required)');
  const positions = file.tensors.get('position_embd.weight');
  if (!positions || positions.shape.length !== 2) throw new ConfigError(file.path, 'position_embd.weight', 'missing or not 2-D (GPT-2 learns its positions)');
  return {
    architectures: [arch.hfClass],
    model_type: arch.modelType,
    n_embd: hidden,
    n_head: heads,
    n_layer: file.positiveInteger(k('block_count')),
    n_positions: positions.shape[0],
    n_inner: file.positiveInteger(k('feed_forward_length')),
    vocab_size: embedding.shape[0],
    layer_norm_epsilon: file.optionalPositive(k('attention.layer_norm_epsilon')) ?? 1e-5,
    activation_function: arch.activation,
    scale_attn_weights: true,
    tie_word_embeddings: !file.tensors.has('output.weight'),
  };
}
