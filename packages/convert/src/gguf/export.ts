// GGUF export: a Kiln checkpoint becomes a GGUF file llama.cpp (and node-llama-cpp) runs: the metadata
// and tensor names llama.cpp's convert_hf_to_gguf.py writes for the family, q/k rows permuted for its
// rope where the family needs it, matrices cast or quantized (F16, BF16, Q8_0, Q4_0) natively, norms and
// biases in F32 (what llama.cpp's CPU ops expect), and the tokenizer as `tokenizer.ggml.*`.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { ConfigError, getArchitecture } from '@kiln/models';
import { loadNative, type GgufMetadataEntry, type NativeAddon, type WriteGgufOptions, type WriteGgufResult } from '@kiln/native';
import { readKilnCheckpoint } from '../checkpoint';
import { ConvertError } from '../errors';
import { isFile, readJsonObject } from '../json-file';
import {
  ggufArchitectureByHfClass,
  GGUF_ARCHITECTURES,
  ggufTensorName,
  ggufValueOffset,
  ropePermutationHeads,
  type GgufArchitecture,
} from './architectures';
import { ggufTokenizerMetadata } from './tokenizer';

/** Tensor types `exportGguf` writes for matrices. */
export const GGUF_EXPORT_TYPES = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0'] as const;
export type GgufExportType = (typeof GGUF_EXPORT_TYPES)[number];

// llama_ftype (llama.h): general.file_type of a file whose matrices are mostly of one type.
const FILE_TYPE: Record<GgufExportType, number> = { f32: 0, f16: 1, q4_0: 2, q8_0: 7, bf16: 32 };

export interface ExportGgufOptions {
  /** A Kiln checkpoint folder (what `convertCheckpoint` writes). */
  checkpointDir: string;
  /** The GGUF file to write; written to a temporary file then renamed: never half-written. */
  outputFile: string;
  /**
   * Type of the matrices. Default 'f16'. 1-D tensors are always F32; a matrix whose rows are not whole
   * 32-element blocks is written F16 when a block type is asked for (as llama.cpp's converter does).
   */
  type?: GgufExportType;
}

export interface ExportGgufResult extends WriteGgufResult {
  outputFile: string;
  architecture: string;
}

/** The hyperparameters llama.cpp reads, from either of the zoo's config shapes for these families. */
interface Hyperparameters {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  maxPositionEmbeddings: number;
  normEps: number;
  ropeTheta: number;
  rotaryDim: number;
  ropeScaling: { type: string; factor?: number };
  slidingWindows: number[];
  /** Gemma 2: the softmax scale (query_pre_attn_scalar^-0.5) and the soft-caps, when set. */
  attentionScale?: number;
  attentionSoftcap?: number;
  finalLogitSoftcap?: number;
}

type ModelConfig = Record<string, unknown> & {
  // LlamaConfig (llama, mistral, qwen2)
  intermediateSize?: number;
  rmsNormEps?: number;
  ropeTheta?: number;
  ropeScaling?: { type: string; factor?: number };
  slidingWindows?: number[];
  // DecoderConfig (qwen3)
  mlp?: { intermediateSize: number };
  norm?: { kind: string; eps: number };
  attention?: {
    slidingWindows: number[];
    rotary: { theta: number; rotaryDim: number; scaling: { type: string; factor?: number } } | null;
    scale?: number;
    softcap?: number;
  };
  finalLogitSoftcap?: number;
};

function readHyperparameters(file: string, m: ModelConfig): Hyperparameters {
  const rotary = m.attention?.rotary;
  const value = <T>(key: string, v: T | undefined): T => {
    if (v === undefined || v === null) throw new ConfigError(file, `model.${key}`, 'missing');
    return v;
  };
  return {
    vocabSize: value('vocabSize', m.vocabSize as number),
    hiddenSize: value('hiddenSize', m.hiddenSize as number),
    intermediateSize: value('intermediateSize', m.intermediateSize ?? m.mlp?.intermediateSize),
    numLayers: value('numLayers', m.numLayers as number),
    numHeads: value('numHeads', m.numHeads as number),
    numKvHeads: value('numKvHeads', m.numKvHeads as number),
    headDim: value('headDim', m.headDim as number),
    maxPositionEmbeddings: value('maxPositionEmbeddings', m.maxPositionEmbeddings as number),
    normEps: value('rmsNormEps', m.rmsNormEps ?? m.norm?.eps),
    ropeTheta: value('ropeTheta', m.ropeTheta ?? rotary?.theta),
    rotaryDim: rotary?.rotaryDim ?? (m.headDim as number),
    ropeScaling: m.ropeScaling ?? rotary?.scaling ?? { type: 'default' },
    slidingWindows: m.slidingWindows ?? m.attention?.slidingWindows ?? [],
    attentionScale: m.attention?.scale,
    attentionSoftcap: m.attention?.softcap,
    finalLogitSoftcap: m.finalLogitSoftcap,
  };
}

function hyperparameters(file: string, family: GgufArchitecture, m: Hyperparameters): GgufMetadataEntry[] {
  const gguf = family.gguf;
  const u32 = (key: string, value: number): GgufMetadataEntry => ({ key: `${gguf}.${key}`, type: 'UINT32', value });
  const f32 = (key: string, value: number): GgufMetadataEntry => ({ key: `${gguf}.${key}`, type: 'FLOAT32', value });
  const gemma2: GgufMetadataEntry[] = [];
  if (gguf === 'gemma2') {
    // llama.cpp's Gemma 2: a window on the even layers only, queries scaled by 1 / sqrt(head size).
    const window = m.slidingWindows[0] ?? 0;
    if (!m.slidingWindows.every((w, layer) => w === (layer % 2 === 0 ? window : 0))) {
      throw new ConfigError(file, 'model.attention.slidingWindows', "llama.cpp's gemma2 slides on the even layers only; this model's windows differ");
    }
    if (window > 0) gemma2.push(u32('attention.sliding_window', window));
    if (m.attentionScale !== undefined && Math.abs(m.attentionScale * Math.sqrt(m.headDim) - 1) > 1e-6) {
      throw new ConfigError(file, 'model.attention.scale', `${m.attentionScale} is not 1 / sqrt(head size), the only scale llama.cpp's gemma2 applies`);
    }
    if (m.attentionSoftcap) gemma2.push(f32('attn_logit_softcapping', m.attentionSoftcap));
    if (m.finalLogitSoftcap) gemma2.push(f32('final_logit_softcapping', m.finalLogitSoftcap));
  } else if (gguf === 'phi3' && m.slidingWindows.length > 0 && m.slidingWindows.every((w) => w > 0 && w === m.slidingWindows[0])) {
    gemma2.push(u32('attention.sliding_window', m.slidingWindows[0])); // llama.cpp's phi3: one window, every layer
  } else if (m.slidingWindows.some((w) => w > 0)) {
    throw new ConfigError(file, 'model.slidingWindows', `llama.cpp's ${gguf} has no sliding-window attention; this model uses it`);
  } else if (m.attentionSoftcap || m.finalLogitSoftcap) {
    throw new ConfigError(file, 'model', `llama.cpp's ${gguf} has no soft-capping; this model uses it`);
  }
  const entries = [
    u32('vocab_size', m.vocabSize),
    u32('context_length', m.maxPositionEmbeddings),
    u32('embedding_length', m.hiddenSize),
    u32('block_count', m.numLayers),
    u32('feed_forward_length', m.intermediateSize),
    u32('rope.dimension_count', m.rotaryDim),
    u32('attention.head_count', m.numHeads),
    u32('attention.head_count_kv', m.numKvHeads),
    u32('attention.key_length', m.headDim),
    u32('attention.value_length', m.headDim),
    f32(family.norm === 'rms' ? 'attention.layer_norm_rms_epsilon' : 'attention.layer_norm_epsilon', m.normEps),
    f32('rope.freq_base', m.ropeTheta),
    ...gemma2,
  ];
  const scaling = m.ropeScaling.type;
  if (scaling === 'linear') {
    entries.push({ key: `${gguf}.rope.scaling.type`, type: 'STRING', value: 'linear' });
    entries.push(f32('rope.scaling.factor', m.ropeScaling.factor!));
  } else if (scaling !== 'default') {
    throw new ConfigError(file, 'model.ropeScaling', `"${scaling}" rope scaling is not exported to GGUF yet`);
  }
  return entries;
}

/** The part of the zoo's DecoderConfig a GPT-2 export reads. */
interface Gpt2Config {
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  norm: { kind: string; eps: number };
  learnedPositions?: { tableSize: number; offset: number };
  attention: { scale: number; scaleByInverseLayer?: boolean; qkvBias: boolean; denseBias: boolean };
  mlp: { kind: string; activation: string; intermediateSize: number; bias: boolean };
  lmHeadBias?: boolean;
}

/** llama.cpp's gpt2 keys, after checking that its graph (LLM_ARCH_GPT2) computes this model. */
function gpt2Hyperparameters(file: string, family: GgufArchitecture, m: Gpt2Config): { model: Hyperparameters; entries: GgufMetadataEntry[] } {
  const refuse = (key: string, why: string) => {
    throw new ConfigError(file, `model.${key}`, `${why}: llama.cpp's gpt2 graph does not compute this model`);
  };
  if (!m.learnedPositions || m.learnedPositions.offset !== 0) refuse('learnedPositions', 'GPT-2 positions from 0 are required');
  if (m.norm.kind !== 'layer') refuse('norm.kind', `"${m.norm.kind}"`);
  if (Math.abs(m.attention.scale * Math.sqrt(m.headDim) - 1) > 1e-6 || m.attention.scaleByInverseLayer) refuse('attention.scale', 'only 1 / sqrt(head size)');
  if (!m.attention.qkvBias || !m.attention.denseBias || !m.mlp.bias) refuse('attention.qkvBias', 'biases everywhere are required');
  if (m.mlp.kind !== 'plain' || m.mlp.activation !== 'gelu_tanh') refuse('mlp.activation', `"${m.mlp.activation}" (tanh GELU only)`);
  if (m.lmHeadBias) refuse('lmHeadBias', 'an LM head bias');
  const u32 = (key: string, value: number): GgufMetadataEntry => ({ key: `${family.gguf}.${key}`, type: 'UINT32', value });
  const positions = m.learnedPositions!.tableSize;
  const model: Hyperparameters = {
    vocabSize: m.vocabSize,
    hiddenSize: m.hiddenSize,
    intermediateSize: m.mlp.intermediateSize,
    numLayers: m.numLayers,
    numHeads: m.numHeads,
    numKvHeads: m.numKvHeads,
    headDim: m.headDim,
    maxPositionEmbeddings: positions,
    normEps: m.norm.eps,
    ropeTheta: 0,
    rotaryDim: 0,
    ropeScaling: { type: 'default' },
    slidingWindows: [],
  };
  const entries: GgufMetadataEntry[] = [
    u32('vocab_size', m.vocabSize),
    u32('context_length', positions),
    u32('embedding_length', m.hiddenSize),
    u32('feed_forward_length', m.mlp.intermediateSize),
    u32('block_count', m.numLayers),
    u32('attention.head_count', m.numHeads),
    { key: `${family.gguf}.attention.layer_norm_epsilon`, type: 'FLOAT32', value: m.norm.eps },
  ];
  return { model, entries };
}

/** Whether the tokenizer's post-processor puts BOS first (transformers' add_bos_token). */
function addsBos(tokenizer: Record<string, unknown>, bos: number | null): boolean {
  const post = tokenizer.post_processor as { type?: string; single?: Array<Record<string, { id?: string }>>; special_tokens?: Record<string, { ids?: number[] }> } | null;
  if (!post || post.type !== 'TemplateProcessing' || !Array.isArray(post.single) || bos === null) return false;
  const first = post.single[0]?.SpecialToken?.id;
  return first !== undefined && post.special_tokens?.[first]?.ids?.[0] === bos;
}

/** Writes a Kiln checkpoint as a GGUF file. Errors name the checkpoint file and key, or the tensor. */
export async function exportGguf(
  options: ExportGgufOptions,
  native: Pick<NativeAddon, 'writeGguf'> = loadNative(),
): Promise<ExportGgufResult> {
  const type = options.type ?? 'f16';
  if (!(GGUF_EXPORT_TYPES as readonly string[]).includes(type)) {
    throw new Error(`type: expected one of ${GGUF_EXPORT_TYPES.join(', ')}, got ${JSON.stringify(type)}`);
  }
  const checkpoint = await readKilnCheckpoint(options.checkpointDir);
  const configFile = path.join(path.resolve(options.checkpointDir), 'config.json');
  const { config } = checkpoint;
  const family = ggufArchitectureByHfClass(config.architecture);
  if (!family) {
    throw new ConfigError(
      configFile,
      'architecture',
      `${config.architecture} has no GGUF export (supported: ${GGUF_ARCHITECTURES.map((a) => a.hfClass).join(', ')})`,
    );
  }
  const arch = getArchitecture(config.architecture, configFile);
  const gpt2 = family.gguf === 'gpt2' ? gpt2Hyperparameters(configFile, family, config.model as unknown as Gpt2Config) : undefined;
  const model = gpt2?.model ?? readHyperparameters(configFile, config.model as ModelConfig);
  const plan = arch.checkpointTensors(config.model as never);

  const matrixType = type.toUpperCase() as 'F32' | 'F16' | 'BF16' | 'Q8_0' | 'Q4_0';
  const blockType = matrixType === 'Q8_0' || matrixType === 'Q4_0';
  // Each GGUF tensor is one transformers tensor: a Kiln tensor copied from it, or the Kiln tensors cut
  // from its rows (Phi-3's q/k/v from qkv_proj), put back together in row order.
  const groups = new Map<string, Array<{ name: string; rowStart: number; rows: number; shape: number[] }>>();
  for (const entry of plan) {
    const source = entry.sources[0];
    // A transposed source (GPT-2's Conv1D [in, out]) is held [out, in] by Kiln, llama.cpp's orientation:
    // its rows are the transposed tensor's.
    const transposed = source?.transpose === true && family.conv1dWeights?.test(source.tensor) === true;
    if (entry.sources.length !== 1 || (source.transpose && !transposed)) {
      throw new ConvertError(checkpoint.weightsFile, `tensor ${entry.name} has no llama.cpp counterpart in ${family.gguf}`);
    }
    const shape = transposed ? [source.shape[1], source.shape[0]] : source.shape;
    const parts = groups.get(source.tensor) ?? [];
    parts.push({ name: entry.name, rowStart: source.rowStart ?? 0, rows: source.rowCount ?? shape[0], shape });
    groups.set(source.tensor, parts);
  }
  const tensors: WriteGgufOptions['tensors'] = [...groups].map(([hfName, parts]) => {
    const gguf = ggufTensorName(family, hfName);
    if (gguf === undefined) throw new ConvertError(checkpoint.weightsFile, `tensor ${parts[0].name} has no llama.cpp counterpart in ${family.gguf}`);
    parts.sort((a, b) => a.rowStart - b.rowStart);
    let next = 0;
    for (const part of parts) {
      if (part.rowStart !== next) throw new ConvertError(checkpoint.weightsFile, `the tensors cut from ${hfName} do not cover its rows in order`);
      next += part.rows;
    }
    const shape = parts[0].shape;
    if (next !== shape[0]) throw new ConvertError(checkpoint.weightsFile, `the tensors cut from ${hfName} do not cover its ${shape[0]} rows`);
    const rowLength = shape[shape.length - 1];
    const tensorType = shape.length === 1 ? 'F32' : blockType && rowLength % 32 !== 0 ? 'F16' : matrixType;
    return {
      name: gguf,
      type: tensorType,
      sources: parts.map((part) => ({ file: checkpoint.weightsFile, tensor: part.name })),
      permuteHeads: ropePermutationHeads(family, hfName, model),
      valueOffset: ggufValueOffset(family, hfName),
    };
  });

  const dir = path.resolve(options.checkpointDir);
  const tokenizerPath = path.join(dir, 'tokenizer.json');
  if (!(await isFile(tokenizerPath))) throw new ConvertError(tokenizerPath, 'missing (llama.cpp needs the vocabulary in the GGUF file)');
  const tokenizer = await readJsonObject(tokenizerPath);
  const tokenizerConfigPath = path.join(dir, 'tokenizer_config.json');
  const tokenizerConfig = (await isFile(tokenizerConfigPath)) ? await readJsonObject(tokenizerConfigPath) : {};
  const chatTemplatePath = path.join(dir, 'chat_template.jinja');
  const chatTemplate =
    typeof tokenizerConfig.chat_template === 'string'
      ? tokenizerConfig.chat_template
      : (await isFile(chatTemplatePath))
        ? await fs.readFile(chatTemplatePath, 'utf8')
        : undefined;
  const { generation } = config;
  // An id outside the vocabulary (tiny test models borrow GPT-2's 50256) can never be generated or
  // embedded; llama.cpp refuses such a file, so it is left out.
  const inVocab = (id: number | null | undefined) => (id !== null && id !== undefined && id < model.vocabSize ? id : null);
  const ids = {
    bos: inVocab(generation.bosTokenId),
    eos: inVocab(generation.eosTokenIds[0]),
    pad: inVocab(generation.padTokenId),
    addBos: addsBos(tokenizer, generation.bosTokenId),
  };

  const metadata: GgufMetadataEntry[] = [
    { key: 'general.architecture', type: 'STRING', value: family.gguf },
    { key: 'general.name', type: 'STRING', value: path.basename(dir) },
    { key: 'general.file_type', type: 'UINT32', value: FILE_TYPE[type] },
    ...(blockType ? [{ key: 'general.quantization_version', type: 'UINT32', value: 2 } as GgufMetadataEntry] : []),
    ...(gpt2?.entries ?? hyperparameters(configFile, family, model)),
    ...ggufTokenizerMetadata(tokenizerPath, tokenizer, model.vocabSize, ids, chatTemplate),
  ];
  const outputFile = path.resolve(options.outputFile);
  await fs.mkdir(path.dirname(outputFile), { recursive: true });
  const result = await native.writeGguf({ path: outputFile, metadata, tensors });
  return { ...result, outputFile, architecture: family.gguf };
}
