#!/usr/bin/env node
// Converts a LLaMA-architecture Hugging Face folder (config.json, model.safetensors, tokenizer.json with a
// byte-level BPE model) into a GGUF v3 file that llama.cpp loads as `llama`, keeping the bf16 matrices
// bit-identical so a benchmark compares the two runtimes on the same weights.
//
// Written from the GGUF spec (ggml docs/gguf.md) and what llama.cpp's convert_hf_to_gguf.py does for
// LlamaModel: the same tensor names and metadata keys, q/k rows permuted for llama.cpp's rope, 1-D
// tensors (the RMSNorm weights) stored as F32 (llama.cpp's CPU ops expect F32 there; bf16 -> f32 is exact).
//
// Usage: node tools/bench/hf-to-gguf.mjs <hf-model-dir> <out.gguf>
// This is a dev tool for the benchmark, not part of Kiln: it handles one unsharded safetensors file.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

// Bounds on untrusted input: anything bigger is not a model this tool is meant for.
const MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024;
const MAX_JSON_FILE = 256 * 1024 * 1024;
const MAX_VOCAB = 1 << 20;
const ALIGNMENT = 32; // GGUF default (general.alignment)

// GGUF metadata value types (gguf.md, "gguf_metadata_value_type").
const GGUF = { UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9, UINT64: 10 };
// ggml tensor types (ggml.h, "enum ggml_type").
const GGML_TYPE = { F32: 0, F16: 1, BF16: 30 };
const LLAMA_FTYPE_MOSTLY_BF16 = 32; // general.file_type when the matrices are bf16
// llama.cpp token types (llama_token_type / gguf-py TokenType).
const TOKEN_TYPE = { NORMAL: 1, UNUSED: 5, CONTROL: 3, USER_DEFINED: 4 };

class ConvertError extends Error {}

function readJsonFile(file) {
  const size = fs.statSync(file).size;
  if (size > MAX_JSON_FILE) throw new ConvertError(`${file}: ${size} bytes, more than the ${MAX_JSON_FILE} this tool reads`);
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    throw new ConvertError(`${file}: invalid JSON (${error.message})`);
  }
}

function positiveInt(config, key, file) {
  const value = config[key];
  if (!Number.isSafeInteger(value) || value < 1) throw new ConvertError(`${file}: ${key} must be a positive integer, got ${JSON.stringify(value)}`);
  return value;
}

function positiveNumber(value, key, file) {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) throw new ConvertError(`${file}: ${key} must be a positive number, got ${JSON.stringify(value)}`);
  return value;
}

/** The hyperparameters llama.cpp needs, validated; rejects what this converter does not translate. */
export function readLlamaConfig(modelDir) {
  const file = path.join(modelDir, 'config.json');
  const c = readJsonFile(file);
  const archs = c.architectures;
  if (!Array.isArray(archs) || !archs.includes('LlamaForCausalLM')) throw new ConvertError(`${file}: architectures must include LlamaForCausalLM, got ${JSON.stringify(archs)}`);
  const hidden = positiveInt(c, 'hidden_size', file);
  const heads = positiveInt(c, 'num_attention_heads', file);
  const kvHeads = c.num_key_value_heads === undefined ? heads : positiveInt(c, 'num_key_value_heads', file);
  const headDim = c.head_dim === undefined ? hidden / heads : positiveInt(c, 'head_dim', file);
  if (!Number.isInteger(headDim) || headDim % 2 !== 0) throw new ConvertError(`${file}: head_dim ${headDim} must be an even integer`);
  if (heads % kvHeads !== 0) throw new ConvertError(`${file}: num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}`);
  const ropeParams = c.rope_parameters ?? c.rope_scaling ?? {};
  const ropeType = ropeParams.rope_type ?? ropeParams.type ?? 'default';
  if (ropeType !== 'default') throw new ConvertError(`${file}: rope type ${JSON.stringify(ropeType)} is not supported (only "default")`);
  const ropeTheta = positiveNumber(ropeParams.rope_theta ?? c.rope_theta ?? 10000, 'rope_theta', file);
  if (c.attention_bias || c.mlp_bias) throw new ConvertError(`${file}: attention_bias / mlp_bias are not supported`);
  if ((c.hidden_act ?? 'silu') !== 'silu') throw new ConvertError(`${file}: hidden_act ${JSON.stringify(c.hidden_act)} is not supported (only silu)`);
  return {
    hidden,
    heads,
    kvHeads,
    headDim,
    layers: positiveInt(c, 'num_hidden_layers', file),
    intermediate: positiveInt(c, 'intermediate_size', file),
    vocab: positiveInt(c, 'vocab_size', file),
    contextLength: positiveInt(c, 'max_position_embeddings', file),
    rmsEps: positiveNumber(c.rms_norm_eps ?? 1e-6, 'rms_norm_eps', file),
    ropeTheta,
    tied: c.tie_word_embeddings === true,
    bosId: Number.isSafeInteger(c.bos_token_id) ? c.bos_token_id : undefined,
    eosId: Number.isSafeInteger(c.eos_token_id) ? c.eos_token_id : Array.isArray(c.eos_token_id) ? c.eos_token_id[0] : undefined,
    padId: Number.isSafeInteger(c.pad_token_id) ? c.pad_token_id : undefined,
  };
}

/** Header of one safetensors file: tensor name -> { dtype, shape, start, end } (absolute file offsets). */
function readSafetensorsHeader(file, fd, fileSize) {
  const lengthBytes = Buffer.alloc(8);
  if (fs.readSync(fd, lengthBytes, 0, 8, 0) !== 8) throw new ConvertError(`${file}: shorter than the 8-byte header length`);
  const headerLength = lengthBytes.readBigUInt64LE(0);
  if (headerLength > BigInt(Math.min(MAX_SAFETENSORS_HEADER, fileSize - 8))) throw new ConvertError(`${file}: header length ${headerLength} is past the file end or the ${MAX_SAFETENSORS_HEADER}-byte limit`);
  const headerBytes = Buffer.alloc(Number(headerLength));
  fs.readSync(fd, headerBytes, 0, headerBytes.length, 8);
  let header;
  try {
    header = JSON.parse(headerBytes.toString('utf8'));
  } catch (error) {
    throw new ConvertError(`${file}: header is not valid JSON (${error.message})`);
  }
  const dataStart = 8 + headerBytes.length;
  const elementSize = { BF16: 2, F16: 2, F32: 4 };
  const tensors = new Map();
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const { dtype, shape, data_offsets: offsets } = entry ?? {};
    if (!(dtype in elementSize)) throw new ConvertError(`${file}: tensor ${name} has dtype ${JSON.stringify(dtype)}; supported: BF16, F16, F32`);
    if (!Array.isArray(shape) || shape.length > 4 || !shape.every((d) => Number.isSafeInteger(d) && d > 0)) throw new ConvertError(`${file}: tensor ${name} has an invalid shape ${JSON.stringify(shape)}`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) throw new ConvertError(`${file}: tensor ${name} has invalid data_offsets ${JSON.stringify(offsets)}`);
    const [begin, end] = offsets;
    const bytes = shape.reduce((a, b) => a * b, 1) * elementSize[dtype];
    if (end - begin !== bytes || dataStart + end > fileSize) throw new ConvertError(`${file}: tensor ${name} data_offsets [${begin}, ${end}] do not hold ${bytes} bytes inside the file`);
    tensors.set(name, { dtype, shape, start: dataStart + begin, end: dataStart + end });
  }
  return tensors;
}

function bf16ToF32(src) {
  const out = Buffer.alloc(src.length * 2);
  for (let i = 0; i < src.length / 2; i++) out.writeUInt32LE(src.readUInt16LE(2 * i) << 16 >>> 0, 4 * i);
  return out;
}

function f16ToF32Value(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** Any supported safetensors dtype to F32 bytes (used for 1-D tensors, as convert_hf_to_gguf does). */
function toF32(dtype, src) {
  if (dtype === 'F32') return src;
  if (dtype === 'BF16') return bf16ToF32(src);
  const out = Buffer.alloc(src.length * 2);
  for (let i = 0; i < src.length / 2; i++) out.writeFloatLE(f16ToF32Value(src.readUInt16LE(2 * i)), 4 * i);
  return out;
}

/**
 * convert_hf_to_gguf's LlamaModel.permute: HF stores q/k rows per head as [first half | second half]
 * (rotate_half rope); llama.cpp's LLM_ARCH_LLAMA applies the "normal" rope to adjacent pairs, so each
 * head's rows are interleaved: new row 2j+half comes from old row half*(headDim/2)+j.
 * Equivalent to weights.reshape(n_head, 2, rows/n_head/2, cols).swapaxes(1, 2).reshape(weights.shape).
 */
function permuteRows(src, rows, rowBytes, numHeads) {
  if (rows % (numHeads * 2) !== 0) throw new ConvertError(`cannot permute ${rows} rows into ${numHeads} heads of even size`);
  const headRows = rows / numHeads;
  const half = headRows / 2;
  const out = Buffer.alloc(src.length);
  for (let h = 0; h < numHeads; h++) {
    for (let j = 0; j < half; j++) {
      for (let s = 0; s < 2; s++) {
        const from = h * headRows + s * half + j;
        const to = h * headRows + 2 * j + s;
        src.copy(out, to * rowBytes, from * rowBytes, (from + 1) * rowBytes);
      }
    }
  }
  return out;
}

/** HF tensor name -> GGUF name (llama.cpp's tensor map for LLM_ARCH_LLAMA). */
function ggufTensorName(name) {
  const fixed = { 'model.embed_tokens.weight': 'token_embd.weight', 'model.norm.weight': 'output_norm.weight', 'lm_head.weight': 'output.weight' };
  if (name in fixed) return fixed[name];
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(name);
  if (!m) return undefined;
  const inner = {
    'input_layernorm.weight': 'attn_norm.weight',
    'self_attn.q_proj.weight': 'attn_q.weight',
    'self_attn.k_proj.weight': 'attn_k.weight',
    'self_attn.v_proj.weight': 'attn_v.weight',
    'self_attn.o_proj.weight': 'attn_output.weight',
    'post_attention_layernorm.weight': 'ffn_norm.weight',
    'mlp.gate_proj.weight': 'ffn_gate.weight',
    'mlp.up_proj.weight': 'ffn_up.weight',
    'mlp.down_proj.weight': 'ffn_down.weight',
  }[m[2]];
  return inner && `blk.${m[1]}.${inner}`;
}

/** Vocabulary of a byte-level BPE tokenizer.json, in id order, as llama.cpp's "gpt2" tokenizer wants it. */
export function readBpeVocab(modelDir, vocabSize) {
  const file = path.join(modelDir, 'tokenizer.json');
  const t = readJsonFile(file);
  if (t?.model?.type !== 'BPE') throw new ConvertError(`${file}: model.type must be BPE, got ${JSON.stringify(t?.model?.type)}`);
  if (t.pre_tokenizer?.type !== 'ByteLevel' || t.pre_tokenizer.use_regex === false) {
    // llama.cpp's "gpt-2" pre-tokenizer is the GPT-2 regex followed by byte-level mapping: only that matches.
    throw new ConvertError(`${file}: pre_tokenizer must be ByteLevel with the GPT-2 regex, got ${JSON.stringify(t.pre_tokenizer?.type)}`);
  }
  if (vocabSize > MAX_VOCAB) throw new ConvertError(`${file}: vocab_size ${vocabSize} is above ${MAX_VOCAB}`);
  const tokens = new Array(vocabSize).fill(undefined);
  const types = new Array(vocabSize).fill(TOKEN_TYPE.NORMAL);
  for (const [text, id] of Object.entries(t.model.vocab ?? {})) {
    if (!Number.isSafeInteger(id) || id < 0 || id >= vocabSize) throw new ConvertError(`${file}: token ${JSON.stringify(text)} has id ${id}, outside [0, ${vocabSize})`);
    tokens[id] = text;
  }
  for (const added of t.added_tokens ?? []) {
    if (!Number.isSafeInteger(added.id) || added.id < 0 || added.id >= vocabSize) throw new ConvertError(`${file}: added token ${JSON.stringify(added.content)} has id ${added.id}, outside [0, ${vocabSize})`);
    tokens[added.id] = added.content;
    types[added.id] = added.special ? TOKEN_TYPE.CONTROL : TOKEN_TYPE.USER_DEFINED;
  }
  // convert_hf_to_gguf fills ids the tokenizer does not define (config vocab_size > tokenizer size).
  for (let id = 0; id < vocabSize; id++) {
    if (tokens[id] === undefined) {
      tokens[id] = `[PAD${id}]`;
      types[id] = TOKEN_TYPE.UNUSED;
    }
  }
  const merges = (t.model.merges ?? []).map((merge, index) => {
    if (typeof merge === 'string') return merge;
    if (Array.isArray(merge) && merge.length === 2 && merge.every((p) => typeof p === 'string')) return `${merge[0]} ${merge[1]}`;
    throw new ConvertError(`${file}: model.merges[${index}] is neither "a b" nor ["a", "b"]`);
  });
  return { tokens, types, merges };
}

/** Little-endian GGUF byte writer for the header (metadata and tensor infos). */
class HeaderWriter {
  #chunks = [];
  #length = 0;
  #push(buffer) {
    this.#chunks.push(buffer);
    this.#length += buffer.length;
  }
  u32(v) { const b = Buffer.alloc(4); b.writeUInt32LE(v); this.#push(b); }
  i32(v) { const b = Buffer.alloc(4); b.writeInt32LE(v); this.#push(b); }
  u64(v) { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); this.#push(b); }
  f32(v) { const b = Buffer.alloc(4); b.writeFloatLE(v); this.#push(b); }
  bool(v) { this.#push(Buffer.from([v ? 1 : 0])); }
  string(s) { const b = Buffer.from(s, 'utf8'); this.u64(b.length); this.#push(b); }
  pad(alignment) { const extra = (alignment - (this.#length % alignment)) % alignment; this.#push(Buffer.alloc(extra)); }
  get length() { return this.#length; }
  toBuffer() { return Buffer.concat(this.#chunks, this.#length); }
}

function writeKv(w, key, type, value) {
  w.string(key);
  w.u32(type);
  writeValue(w, type, value);
}

function writeValue(w, type, value) {
  switch (type) {
    case GGUF.UINT32: return w.u32(value);
    case GGUF.INT32: return w.i32(value);
    case GGUF.FLOAT32: return w.f32(value);
    case GGUF.BOOL: return w.bool(value);
    case GGUF.STRING: return w.string(value);
    case GGUF.UINT64: return w.u64(value);
    case GGUF.ARRAY: {
      const [itemType, items] = value;
      w.u32(itemType);
      w.u64(items.length);
      for (const item of items) writeValue(w, itemType, item);
      return;
    }
    default: throw new Error(`unknown GGUF value type ${type}`);
  }
}

/** Converts `modelDir` to a GGUF file at `outFile`. Returns a summary (tensor bytes, counts). */
export function convertHfToGguf(modelDir, outFile) {
  const cfg = readLlamaConfig(modelDir);
  const stFile = path.join(modelDir, 'model.safetensors');
  if (!fs.existsSync(stFile)) throw new ConvertError(`${stFile}: not found (sharded checkpoints are not supported by this tool)`);
  const vocab = readBpeVocab(modelDir, cfg.vocab);
  const fd = fs.openSync(stFile, 'r');
  try {
    const stSize = fs.fstatSync(fd).size;
    const source = readSafetensorsHeader(stFile, fd, stSize);
    const expectedShapes = new Map([
      ['model.embed_tokens.weight', [cfg.vocab, cfg.hidden]],
      ['model.norm.weight', [cfg.hidden]],
    ]);
    if (!cfg.tied) expectedShapes.set('lm_head.weight', [cfg.vocab, cfg.hidden]);
    for (let i = 0; i < cfg.layers; i++) {
      const p = `model.layers.${i}.`;
      expectedShapes.set(`${p}input_layernorm.weight`, [cfg.hidden]);
      expectedShapes.set(`${p}self_attn.q_proj.weight`, [cfg.heads * cfg.headDim, cfg.hidden]);
      expectedShapes.set(`${p}self_attn.k_proj.weight`, [cfg.kvHeads * cfg.headDim, cfg.hidden]);
      expectedShapes.set(`${p}self_attn.v_proj.weight`, [cfg.kvHeads * cfg.headDim, cfg.hidden]);
      expectedShapes.set(`${p}self_attn.o_proj.weight`, [cfg.hidden, cfg.heads * cfg.headDim]);
      expectedShapes.set(`${p}post_attention_layernorm.weight`, [cfg.hidden]);
      expectedShapes.set(`${p}mlp.gate_proj.weight`, [cfg.intermediate, cfg.hidden]);
      expectedShapes.set(`${p}mlp.up_proj.weight`, [cfg.intermediate, cfg.hidden]);
      expectedShapes.set(`${p}mlp.down_proj.weight`, [cfg.hidden, cfg.intermediate]);
    }
    for (const name of source.keys()) {
      if (name.endsWith('rotary_emb.inv_freq')) continue; // derived from rope_theta; llama.cpp computes it
      if (!expectedShapes.has(name)) throw new ConvertError(`${stFile}: unexpected tensor ${name} for a LlamaForCausalLM with this config`);
    }

    // Tensors in llama.cpp's usual order; data of each is read, transformed and kept until written.
    const tensors = [];
    for (const [name, shape] of expectedShapes) {
      const entry = source.get(name);
      if (!entry) throw new ConvertError(`${stFile}: missing tensor ${name}`);
      if (entry.shape.join(',') !== shape.join(',')) throw new ConvertError(`${stFile}: tensor ${name} has shape [${entry.shape}], expected [${shape}] from config.json`);
      let data = Buffer.alloc(entry.end - entry.start);
      fs.readSync(fd, data, 0, data.length, entry.start);
      let type;
      if (shape.length === 1) {
        data = toF32(entry.dtype, data);
        type = GGML_TYPE.F32;
      } else {
        type = { BF16: GGML_TYPE.BF16, F16: GGML_TYPE.F16, F32: GGML_TYPE.F32 }[entry.dtype];
        const rowBytes = data.length / shape[0];
        if (name.endsWith('q_proj.weight')) data = permuteRows(data, shape[0], rowBytes, cfg.heads);
        if (name.endsWith('k_proj.weight')) data = permuteRows(data, shape[0], rowBytes, cfg.kvHeads);
      }
      // GGUF dims are ggml's ne[]: innermost (contiguous) first, i.e. the row-major shape reversed.
      tensors.push({ name: ggufTensorName(name), dims: [...shape].reverse(), type, data });
    }

    const w = new HeaderWriter();
    const kvs = [
      ['general.architecture', GGUF.STRING, 'llama'],
      ['general.name', GGUF.STRING, path.basename(path.resolve(modelDir))],
      ['general.file_type', GGUF.UINT32, LLAMA_FTYPE_MOSTLY_BF16],
      ['general.alignment', GGUF.UINT32, ALIGNMENT],
      ['llama.vocab_size', GGUF.UINT32, cfg.vocab],
      ['llama.context_length', GGUF.UINT32, cfg.contextLength],
      ['llama.embedding_length', GGUF.UINT32, cfg.hidden],
      ['llama.block_count', GGUF.UINT32, cfg.layers],
      ['llama.feed_forward_length', GGUF.UINT32, cfg.intermediate],
      ['llama.rope.dimension_count', GGUF.UINT32, cfg.headDim],
      ['llama.attention.head_count', GGUF.UINT32, cfg.heads],
      ['llama.attention.head_count_kv', GGUF.UINT32, cfg.kvHeads],
      ['llama.attention.key_length', GGUF.UINT32, cfg.headDim],
      ['llama.attention.value_length', GGUF.UINT32, cfg.headDim],
      ['llama.attention.layer_norm_rms_epsilon', GGUF.FLOAT32, cfg.rmsEps],
      ['llama.rope.freq_base', GGUF.FLOAT32, cfg.ropeTheta],
      ['tokenizer.ggml.model', GGUF.STRING, 'gpt2'],
      // convert_hf_to_gguf names the plain GPT-2 byte-level pre-tokenizer (GPT-2 regex) "gpt-2".
      ['tokenizer.ggml.pre', GGUF.STRING, 'gpt-2'],
      ['tokenizer.ggml.tokens', GGUF.ARRAY, [GGUF.STRING, vocab.tokens]],
      ['tokenizer.ggml.token_type', GGUF.ARRAY, [GGUF.INT32, vocab.types]],
      ['tokenizer.ggml.merges', GGUF.ARRAY, [GGUF.STRING, vocab.merges]],
      ['tokenizer.ggml.add_bos_token', GGUF.BOOL, false],
    ];
    if (cfg.bosId !== undefined) kvs.push(['tokenizer.ggml.bos_token_id', GGUF.UINT32, cfg.bosId]);
    if (cfg.eosId !== undefined) kvs.push(['tokenizer.ggml.eos_token_id', GGUF.UINT32, cfg.eosId]);
    if (cfg.padId !== undefined) kvs.push(['tokenizer.ggml.padding_token_id', GGUF.UINT32, cfg.padId]);

    w.u32(0x46554747); // "GGUF" little-endian
    w.u32(3);
    w.u64(tensors.length);
    w.u64(kvs.length);
    for (const [key, type, value] of kvs) writeKv(w, key, type, value);
    let offset = 0;
    for (const t of tensors) {
      t.offset = offset;
      w.string(t.name);
      w.u32(t.dims.length);
      for (const d of t.dims) w.u64(d);
      w.u32(t.type);
      w.u64(offset);
      offset += Math.ceil(t.data.length / ALIGNMENT) * ALIGNMENT;
    }
    w.pad(ALIGNMENT);

    fs.mkdirSync(path.dirname(path.resolve(outFile)), { recursive: true });
    const tmp = `${outFile}.tmp-${process.pid}`;
    const out = fs.openSync(tmp, 'w');
    try {
      fs.writeSync(out, w.toBuffer());
      for (const t of tensors) {
        fs.writeSync(out, t.data);
        const padding = Math.ceil(t.data.length / ALIGNMENT) * ALIGNMENT - t.data.length;
        if (padding) fs.writeSync(out, Buffer.alloc(padding));
      }
    } finally {
      fs.closeSync(out);
    }
    fs.renameSync(tmp, outFile);
    return {
      file: outFile,
      tensorCount: tensors.length,
      tensorBytes: tensors.reduce((sum, t) => sum + t.data.length, 0),
      embeddingBytes: tensors.find((t) => t.name === 'token_embd.weight').data.length,
      vocab: cfg.vocab,
      fileBytes: fs.statSync(outFile).size,
    };
  } finally {
    fs.closeSync(fd);
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [modelDir, outFile] = process.argv.slice(2);
  if (!modelDir || !outFile) {
    console.error('usage: node tools/bench/hf-to-gguf.mjs <hf-model-dir> <out.gguf>');
    process.exit(2);
  }
  try {
    const summary = convertHfToGguf(modelDir, outFile);
    console.log(`wrote ${summary.file}: ${summary.tensorCount} tensors, ${summary.tensorBytes} tensor bytes, ${summary.fileBytes} bytes in all`);
  } catch (error) {
    console.error(error instanceof ConvertError ? `hf-to-gguf: ${error.message}` : error);
    process.exit(1);
  }
}
