#!/usr/bin/env node
// Writes a random-weight LlamaForCausalLM Hugging Face folder (config.json, generation_config.json, a bf16
// model.safetensors, and scribe-7m's tokenizer files; vocab_size 4096 unless the shape says otherwise) that
// is far larger than the CPU's last-level cache. The benchmark in bandwidth.mjs decodes on it to see how close
// each runtime gets to the DRAM bandwidth bound, which scribe-7m (13.6 MB, in L3) cannot show. See
// docs/benchmarks.md.
//
// A vocabulary larger than scribe-7m's 4096 (TinyLlama's 32000, issue 12's side-by-side) gets, with
// padTokenizer, a tokenizer.json of exactly vocab_size entries: scribe-7m's, plus filler tokens
// "kilnfill<id>" for ids 4096.. (see paddedTokenizer). Without it the tokenizer keeps 4096 entries and the
// ids above are undefined to it (the GPU benchmark's choice; the GGUF export then writes them as "[PAD<id>]"
// of type UNUSED).
//
// The weights are deterministic: each tensor has its own xorshift32 stream seeded from its name, and each
// value is an Irwin-Hall sum of the four bytes of one 32-bit draw (close to a normal), scaled to std 0.02
// as HF's initializer_range does; RMSNorm weights are 1. The safetensors file is written by hand (8-byte
// length, JSON header padded with spaces to a multiple of 8, then the data) and streamed in chunks, so
// memory stays small whatever the size.
//
// Usage: node tools/bench/make-random-llama.mjs [out-dir] [--layers N] [--hidden N] [--intermediate N]
//          [--heads N] [--vocab N] [--pad-tokenizer]
//   default out-dir: tools/bench/.out/random-llama (git-ignored); the folder is reused when its config and
//   generator version match.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const scribeModelDir = path.join(here, '..', '..', 'packages', 'scribe-7m', 'model');
const GENERATOR_VERSION = 1; // bump when the weights a given config produces change
const CHUNK_VALUES = 4 * 1024 * 1024; // bf16 values generated and written per write (8 MB)

export const DEFAULT_SHAPE = { layers: 8, hidden: 2048, intermediate: 5632, heads: 16, kvHeads: 4, vocab: 4096, maxPositions: 512, seed: 1234, padTokenizer: false };

/**
 * scribe-7m's tokenizer.json with filler entries appended up to `vocab` ids, so that a model with a larger
 * vocabulary has a tokenizer (and a GGUF `tokenizer.ggml.tokens` array) of exactly vocab_size entries, every
 * one an ordinary vocabulary token. The benchmarks feed token ids, so the fillers only need to be valid:
 *  - distinct from every other entry ("kilnfill" + the id; scribe-7m has no such token);
 *  - never produced by encoding: the GPT-2 pre-tokenizer splits letters from digits, so no pre-token is
 *    "kilnfill4096", and no merge yields one (merges only build scribe-7m's own entries);
 *  - made of printable ASCII, which byte-level BPE maps to itself, so both Hugging Face's ByteLevel decoder
 *    and llama.cpp's gpt2 detokenizer turn them back into text (a character outside the byte map would not
 *    decode in llama.cpp);
 *  - not added tokens, so neither runtime treats them as special (llama.cpp types them NORMAL).
 */
export function paddedTokenizer(tokenizer, vocab) {
  const entries = Object.keys(tokenizer.model.vocab).length;
  const maxId = Math.max(...Object.values(tokenizer.model.vocab), ...tokenizer.added_tokens.map((t) => t.id));
  if (maxId + 1 !== entries) throw new Error(`scribe-7m's tokenizer ids are not 0..${entries - 1} (largest ${maxId})`);
  if (vocab < entries) throw new Error(`vocab ${vocab} is smaller than the tokenizer's ${entries} entries`);
  const padded = structuredClone(tokenizer);
  for (let id = entries; id < vocab; id++) {
    const text = `kilnfill${id}`;
    if (text in padded.model.vocab) throw new Error(`the tokenizer already has ${JSON.stringify(text)}`);
    padded.model.vocab[text] = id;
  }
  return padded;
}

/** FNV-1a of a string, 32 bits: a per-tensor seed that does not depend on the order tensors are written. */
function fnv1a(text) {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** bf16 bits of a float, rounded to nearest even (no NaN/Inf among these values). */
function toBf16(value) {
  const f = new Float32Array([value]);
  const u = new Uint32Array(f.buffer)[0];
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

// The sum of 4 uniform bytes is 0..1020 with mean 510 and std sqrt(4 * (256^2 - 1) / 12) ≈ 147.8; a lookup
// table maps each sum straight to the bf16 bits of (sum - 510) / 147.8 * 0.02.
const IRWIN_HALL_STD = Math.sqrt((4 * (256 * 256 - 1)) / 12);
const SUM_TO_BF16 = new Uint16Array(1021).map((_, s) => toBf16(((s - 510) / IRWIN_HALL_STD) * 0.02));
const BF16_ONE = toBf16(1);

/** Fills `out` with the next values of the tensor's stream; returns the updated xorshift32 state. */
function fillRandom(out, count, state) {
  let x = state;
  for (let i = 0; i < count; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = SUM_TO_BF16[(x & 0xff) + ((x >>> 8) & 0xff) + ((x >>> 16) & 0xff) + (x >>> 24)];
  }
  return x;
}

/** Tensors of a LlamaForCausalLM (untied lm_head), in HF's names and row-major shapes. */
function tensorList(s) {
  const headDim = s.hidden / s.heads;
  const list = [['model.embed_tokens.weight', [s.vocab, s.hidden]]];
  for (let i = 0; i < s.layers; i++) {
    const p = `model.layers.${i}.`;
    list.push(
      [`${p}input_layernorm.weight`, [s.hidden]],
      [`${p}self_attn.q_proj.weight`, [s.heads * headDim, s.hidden]],
      [`${p}self_attn.k_proj.weight`, [s.kvHeads * headDim, s.hidden]],
      [`${p}self_attn.v_proj.weight`, [s.kvHeads * headDim, s.hidden]],
      [`${p}self_attn.o_proj.weight`, [s.hidden, s.heads * headDim]],
      [`${p}post_attention_layernorm.weight`, [s.hidden]],
      [`${p}mlp.gate_proj.weight`, [s.intermediate, s.hidden]],
      [`${p}mlp.up_proj.weight`, [s.intermediate, s.hidden]],
      [`${p}mlp.down_proj.weight`, [s.hidden, s.intermediate]],
    );
  }
  list.push(['model.norm.weight', [s.hidden]], ['lm_head.weight', [s.vocab, s.hidden]]);
  return list;
}

function configJson(s) {
  return {
    architectures: ['LlamaForCausalLM'],
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: 0,
    dtype: 'bfloat16',
    eos_token_id: 0,
    head_dim: s.hidden / s.heads,
    hidden_act: 'silu',
    hidden_size: s.hidden,
    initializer_range: 0.02,
    intermediate_size: s.intermediate,
    max_position_embeddings: s.maxPositions,
    mlp_bias: false,
    model_type: 'llama',
    num_attention_heads: s.heads,
    num_hidden_layers: s.layers,
    num_key_value_heads: s.kvHeads,
    pad_token_id: 0,
    pretraining_tp: 1,
    rms_norm_eps: 1e-5,
    rope_parameters: { rope_theta: 10000.0, rope_type: 'default' },
    tie_word_embeddings: false,
    use_cache: true,
    vocab_size: s.vocab,
  };
}

/**
 * Writes the folder (reusing it when config.json and the generator stamp match) and returns
 * { dir, parameters, weightBytes, fileBytes, reused }.
 */
export function makeRandomLlama(outDir, shape = {}) {
  const s = { ...DEFAULT_SHAPE, ...shape };
  if (s.hidden % s.heads !== 0 || s.heads % s.kvHeads !== 0) throw new Error(`hidden ${s.hidden}, heads ${s.heads}, kv heads ${s.kvHeads} do not divide`);
  const tensors = tensorList(s);
  const parameters = tensors.reduce((sum, [, shp]) => sum + shp.reduce((a, b) => a * b, 1), 0);
  const config = configJson(s);
  // The tokenizer is in the stamp only when padded, so folders written before the option stay reusable.
  const stamp = JSON.stringify({ generator: GENERATOR_VERSION, seed: s.seed, config, ...(s.padTokenizer ? { tokenizer: 'padded' } : {}) });
  const stampFile = path.join(outDir, '.random-llama-stamp.json');
  const stFile = path.join(outDir, 'model.safetensors');
  if (fs.existsSync(stampFile) && fs.readFileSync(stampFile, 'utf8') === stamp && fs.existsSync(stFile)) {
    return { dir: outDir, parameters, weightBytes: parameters * 2, fileBytes: fs.statSync(stFile).size, reused: true };
  }

  fs.mkdirSync(outDir, { recursive: true });
  fs.rmSync(stampFile, { force: true });
  fs.writeFileSync(path.join(outDir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  fs.writeFileSync(
    path.join(outDir, 'generation_config.json'),
    `${JSON.stringify({ bos_token_id: 0, eos_token_id: 0, pad_token_id: 0 }, null, 2)}\n`,
  );
  fs.copyFileSync(path.join(scribeModelDir, 'tokenizer_config.json'), path.join(outDir, 'tokenizer_config.json'));
  if (s.padTokenizer) {
    const tokenizer = JSON.parse(fs.readFileSync(path.join(scribeModelDir, 'tokenizer.json'), 'utf8'));
    fs.writeFileSync(path.join(outDir, 'tokenizer.json'), JSON.stringify(paddedTokenizer(tokenizer, s.vocab)));
  } else {
    fs.copyFileSync(path.join(scribeModelDir, 'tokenizer.json'), path.join(outDir, 'tokenizer.json'));
  }

  // Header: every tensor's dtype, shape and [begin, end) within the data section, in writing order.
  const header = { __metadata__: { format: 'pt', generator: `kiln tools/bench/make-random-llama.mjs v${GENERATOR_VERSION}`, seed: String(s.seed) } };
  let offset = 0;
  for (const [name, shp] of tensors) {
    const bytes = shp.reduce((a, b) => a * b, 1) * 2;
    header[name] = { dtype: 'BF16', shape: shp, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let headerText = JSON.stringify(header);
  headerText += ' '.repeat((8 - (Buffer.byteLength(headerText) % 8)) % 8); // data starts 8-byte aligned
  const headerBytes = Buffer.from(headerText, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(headerBytes.length));

  const tmp = `${stFile}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeSync(fd, prefix);
    fs.writeSync(fd, headerBytes);
    const chunk = new Uint16Array(CHUNK_VALUES);
    for (const [name, shp] of tensors) {
      let remaining = shp.reduce((a, b) => a * b, 1);
      const isNorm = shp.length === 1;
      // xorshift32 must not start at 0; the multiply spreads similar names apart.
      let state = (Math.imul(fnv1a(name) ^ s.seed, 0x9e3779b1) >>> 0) || 1;
      while (remaining > 0) {
        const n = Math.min(remaining, CHUNK_VALUES);
        if (isNorm) chunk.fill(BF16_ONE, 0, n);
        else state = fillRandom(chunk, n, state);
        fs.writeSync(fd, new Uint8Array(chunk.buffer, 0, n * 2));
        remaining -= n;
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, stFile);
  fs.writeFileSync(stampFile, stamp);
  return { dir: outDir, parameters, weightBytes: parameters * 2, fileBytes: fs.statSync(stFile).size, reused: false };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const argv = process.argv.slice(2);
  let outDir = path.join(here, '.out', 'random-llama');
  const shape = {};
  for (let i = 0; i < argv.length; i++) {
    const flag = { '--layers': 'layers', '--hidden': 'hidden', '--intermediate': 'intermediate', '--heads': 'heads', '--vocab': 'vocab' }[argv[i]];
    if (argv[i] === '--pad-tokenizer') shape.padTokenizer = true;
    else if (flag) {
      const value = Number(argv[++i]);
      if (!Number.isSafeInteger(value) || value < 1 || value > 65536) {
        console.error(`${argv[i - 1]} needs a positive integer, got ${JSON.stringify(argv[i])}`);
        process.exit(2);
      }
      shape[flag] = value;
    } else if (!argv[i].startsWith('--')) outDir = argv[i];
    else {
      console.error(`unknown argument ${argv[i]} (usage: make-random-llama.mjs [out-dir] [--layers N] [--hidden N] [--intermediate N] [--heads N] [--vocab N] [--pad-tokenizer])`);
      process.exit(2);
    }
  }
  const t0 = performance.now();
  const r = makeRandomLlama(outDir, shape);
  console.log(
    `${r.reused ? 'reused' : 'wrote'} ${r.dir}: ${(r.parameters / 1e6).toFixed(1)} M parameters, ` +
      `${(r.fileBytes / 1e6).toFixed(1)} MB model.safetensors in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
}
