// Seeds of the libFuzzer corpora, from the fixtures (issue 16): usage `node tools/fuzz/seeds.mjs <dir>`
// after `npm run build`. Writes <dir>/json (config, generation and tokenizer configs, engine headers),
// <dir>/safetensors (small files keeping the fixtures' headers: their tensor names, dtypes and
// metadata, with shapes shrunk so each seed stays a few KiB) and <dir>/engine (the headers of engines
// built from a few fixtures, which fuzz_engine wraps in a container) and <dir>/gguf (small GGUF files of
// every tensor type Kiln reads, with llama.cpp's metadata and a tokenizer).
import { createRequire } from 'node:module';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const require = createRequire(import.meta.url);
const repo = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');
const out = path.resolve(process.argv[2] ?? path.join(repo, 'native/build-fuzz/seeds'));
const fixtures = path.join(repo, 'fixtures/hf-tiny');
for (const kind of ['json', 'safetensors', 'engine', 'gguf']) mkdirSync(path.join(out, kind), { recursive: true });

const ELEMENT = { F32: 4, F16: 2, BF16: 2, I32: 4, I64: 8, U8: 1 };
function smallSafetensors(file) {
  const bytes = readFileSync(file);
  const length = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + length).toString('utf8'));
  const result = {};
  let offset = 0;
  const chunks = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      result[name] = entry;
      continue;
    }
    const shape = entry.shape.map((d, i) => Math.min(d, i === 0 ? 3 : 2));
    const n = shape.reduce((a, b) => a * b, 1) * (ELEMENT[entry.dtype] ?? 4);
    const begin = 8 + length + entry.data_offsets[0];
    chunks.push(bytes.subarray(begin, begin + n));
    result[name] = { dtype: entry.dtype, shape, data_offsets: [offset, offset + n] };
    offset += n;
  }
  const json = Buffer.from(JSON.stringify(result));
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([prefix, json, ...chunks]);
}

for (const name of readdirSync(fixtures)) {
  const dir = path.join(fixtures, name);
  for (const file of ['config.json', 'generation_config.json', 'tokenizer_config.json']) {
    if (existsSync(path.join(dir, file))) writeFileSync(path.join(out, 'json', `${name}-${file}`), readFileSync(path.join(dir, file)));
  }
  writeFileSync(path.join(out, 'safetensors', `${name}.safetensors`), smallSafetensors(path.join(dir, 'model.safetensors')));
}

// Engine headers: a few fixtures converted and built with small limits (small arenas, fast steps).
const { convertCheckpoint } = require(path.join(repo, 'packages/convert'));
const { buildEngine } = require(path.join(repo, 'packages/builder'));
const work = mkdtempSync(path.join(os.tmpdir(), 'kiln-fuzz-seeds-'));
try {
  for (const name of ['llama', 'gpt2', 'mixtral', 'gemma2', 'falcon', 'phi']) {
    const checkpointDir = path.join(work, `${name}-checkpoint`);
    const engineDir = path.join(work, `${name}-engine`);
    await convertCheckpoint({ modelDir: path.join(fixtures, name), outputDir: checkpointDir });
    await buildEngine({ checkpointDir, outputDir: engineDir, config: { maxBatchSize: 2, maxSeqLen: 32, maxNumTokens: 32 } });
    const engine = readFileSync(path.join(engineDir, 'rank0.engine'));
    const length = Number(engine.readBigUInt64LE(16));
    const header = engine.subarray(24, 24 + length);
    writeFileSync(path.join(out, 'engine', `${name}.json`), header);
    writeFileSync(path.join(out, 'json', `${name}-engine-header.json`), header);
  }
  // GGUF seeds: the llama fixture exported as Q4_0 (under the 64 KiB max_len), Q8_0 and F16 (libFuzzer
  // keeps their first 64 KiB: the metadata, tokenizer and first tensors), and one row of each block type.
  const { exportGguf } = require(path.join(repo, 'packages/convert'));
  const llamaCheckpoint = path.join(work, 'llama-checkpoint');
  for (const type of ['q4_0', 'q8_0', 'f16']) {
    const file = path.join(out, 'gguf', `llama-${type}.gguf`);
    await exportGguf({ checkpointDir: llamaCheckpoint, outputFile: file, type });
  }
  writeFileSync(path.join(out, 'gguf', 'k-quants.gguf'), kQuantSeed());
} finally {
  rmSync(work, { recursive: true, force: true });
}

/** A GGUF file with one 256-wide row of each block type Kiln reads (bytes patterned, scales finite). */
function kQuantSeed() {
  const types = [[2, 'q4_0', 18, 32], [3, 'q4_1', 20, 32], [8, 'q8_0', 34, 32], [12, 'q4_k', 144, 256], [13, 'q5_k', 176, 256], [14, 'q6_k', 210, 256]];
  const u32 = (v) => { const b = Buffer.alloc(4); b.writeUInt32LE(v); return b; };
  const u64 = (v) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); return b; };
  const str = (s) => Buffer.concat([u64(Buffer.byteLength(s)), Buffer.from(s)]);
  const parts = [u32(0x46554747), u32(3), u64(types.length), u64(1), str('general.architecture'), u32(8), str('llama')];
  const datas = [];
  let offset = 0;
  for (const [id, name, blockBytes, blockElements] of types) {
    const data = Buffer.alloc((256 / blockElements) * blockBytes, 0x5a);
    parts.push(str(name), u32(1), u64(256), u32(id), u64(offset));
    datas.push(data, Buffer.alloc((32 - (data.length % 32)) % 32));
    offset += Math.ceil(data.length / 32) * 32;
  }
  const header = Buffer.concat(parts);
  return Buffer.concat([header, Buffer.alloc((32 - (header.length % 32)) % 32), ...datas]);
}

process.stdout.write(`seeds written to ${out}\n`);
