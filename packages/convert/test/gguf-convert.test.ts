// GGUF import and export through @kiln/convert: Kiln checkpoints of the tiny fixtures exported to GGUF
// and imported back are the same checkpoints (names, q/k rows, config, tokenizer), and broken GGUF
// files are refused naming the file and the field, leaving nothing behind.
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { convertCheckpoint, exportGguf } from '@kiln/convert';
import { GGML_TYPE, ggufBytes, type Value } from './gguf-files';
import { readTensors, toFloat32 } from './safetensors-files';

const FIXTURES = path.resolve(__dirname, '../../../fixtures/hf-tiny');
const TEXT = 'The quick brown fox, 1234 times — jumped over “lazy” dogs!\n\tNew line; é, ü, 日本語 and 🙂 too.';
let root: string;

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-gguf-convert-'));
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

async function loadTokenizer(dir: string): Promise<Tokenizer> {
  const json = JSON.parse(await fs.readFile(path.join(dir, 'tokenizer.json'), 'utf8'));
  const config = JSON.parse(await fs.readFile(path.join(dir, 'tokenizer_config.json'), 'utf8').catch(() => '{}'));
  return new Tokenizer(json, config);
}

describe.each(['llama', 'qwen2', 'qwen3', 'gemma', 'gemma2', 'phi3', 'starcoder2', 'gpt2'])('%s: Kiln checkpoint -> F32 GGUF -> Kiln checkpoint', (fixture) => {
  test('gives back every tensor bit for bit, the same model config and a tokenizer that encodes alike', async () => {
    const original = path.join(root, `${fixture}-ckpt`);
    await convertCheckpoint({ modelDir: path.join(FIXTURES, fixture), outputDir: original, dtype: 'float32' });
    const gguf = path.join(root, `${fixture}.gguf`);
    const exported = await exportGguf({ checkpointDir: original, outputFile: gguf, type: 'f32' });
    expect(exported.errors.every((e) => e.rmsError === 0)).toBe(true);
    const imported = path.join(root, `${fixture}-imported`);
    const result = await convertCheckpoint({ modelFile: gguf, outputDir: imported });

    const before = JSON.parse(await fs.readFile(path.join(original, 'config.json'), 'utf8'));
    expect(result.config.architecture).toBe(before.architecture);
    expect(result.config.dtype).toBe('float32');
    // The GGUF keeps no sliding window (llama.cpp has none for these families): the fixtures use none.
    expect(result.config.model).toEqual(before.model);
    const a = await readTensors(path.join(original, 'rank0.safetensors'));
    const b = await readTensors(path.join(imported, 'rank0.safetensors'));
    expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
    for (const [name, t] of a) {
      expect({ name, shape: b.get(name)!.shape }).toEqual({ name, shape: t.shape });
      if (fixture.startsWith('gemma') && /(layernorm|ln_f)\.weight$/.test(name)) {
        // Gemma's norms travel as 1 + w in float32 (llama.cpp's layout): back to w within float32's
        // rounding of 1 + w, half an ulp of 1 (6e-8) for |w| < 1.
        const x = toFloat32(t);
        const y = toFloat32(b.get(name)!);
        const worst = x.reduce((m, v, i) => Math.max(m, Math.abs(v - y[i])), 0);
        expect({ name, worst: worst <= 2 ** -23 }).toEqual({ name, worst: true });
        continue;
      }
      expect({ name, equal: b.get(name)!.data.equals(t.data) }).toEqual({ name, equal: true });
    }
    const tokA = await loadTokenizer(original);
    const tokB = await loadTokenizer(imported);
    expect(tokB.encode(TEXT).ids).toEqual(tokA.encode(TEXT).ids);
    expect(tokB.decode(tokB.encode(TEXT).ids)).toBe(tokA.decode(tokA.encode(TEXT).ids));
    // Nothing staged is left beside the output.
    expect((await fs.readdir(root)).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });
});

describe('bad GGUF files: a clear error naming the file and the field, nothing written', () => {
  let good: Buffer;
  beforeAll(async () => {
    const ckpt = path.join(root, 'bad-base-ckpt');
    await convertCheckpoint({ modelDir: path.join(FIXTURES, 'llama'), outputDir: ckpt });
    const file = path.join(root, 'bad-base.gguf');
    await exportGguf({ checkpointDir: ckpt, outputFile: file, type: 'q8_0' });
    good = await fs.readFile(file);
  });

  async function expectRefused(name: string, bytes: Buffer, message: RegExp): Promise<void> {
    const file = path.join(root, `${name}.gguf`);
    await fs.writeFile(file, bytes);
    const outputDir = path.join(root, `${name}-out`);
    const error = await convertCheckpoint({ modelFile: file, outputDir }).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(error?.message).toEqual(expect.any(String));
    expect(error!.message).toContain(file);
    expect(error!.message).toMatch(message);
    const left = (await fs.readdir(root)).filter((f) => f.startsWith(`${name}-out`));
    expect(left).toEqual([]);
  }

  test('the base file converts (so each failure below is the one change made to it)', async () => {
    const file = path.join(root, 'good.gguf');
    await fs.writeFile(file, good);
    await expect(convertCheckpoint({ modelFile: file, outputDir: path.join(root, 'good-out') })).resolves.toBeDefined();
  });

  test('truncated inside the metadata', async () => {
    await expectRefused('truncated', good.subarray(0, 6000), /truncated: metadata "tokenizer\.ggml\.[a-z_]+"\[\d+\]/);
  });

  test('a tensor count past the end of the file', async () => {
    const bytes = Buffer.from(good);
    bytes.writeBigUInt64LE(1n << 40n, 8);
    await expectRefused('tensor-count', bytes, /tensor_count 1099511627776 is past the end of the file/);
  });

  test('a metadata count past the end of the file', async () => {
    const bytes = Buffer.from(good);
    bytes.writeBigUInt64LE(1n << 33n, 16);
    await expectRefused('kv-count', bytes, /metadata_kv_count 8589934592 is past the end of the file/);
  });

  test('a string length of 2^63', async () => {
    const bytes = Buffer.from(good);
    bytes.writeBigUInt64LE(1n << 63n, 24); // the first key's length
    await expectRefused('string-length', bytes, /metadata key 0: string length 9223372036854775808 is above the/);
  });

  const minimal = (architecture: string): Record<string, Value> => ({
    'general.architecture': { type: 'STRING', value: architecture },
  });

  test('an unknown tensor type', async () => {
    const bytes = ggufBytes(minimal('llama'), [{ name: 'token_embd.weight', dims: [32, 4], type: 99, data: new Uint8Array(512) }]);
    await expectRefused('tensor-type', bytes, /tensor "token_embd.weight": tensor type 99 is not supported/);
  });

  test('an architecture outside the zoo', async () => {
    const bytes = ggufBytes(minimal('mamba'), [{ name: 'token_embd.weight', dims: [32, 4], type: GGML_TYPE.F32, data: new Uint8Array(512) }]);
    await expectRefused('architecture', bytes, /general\.architecture.*"mamba" is not a GGUF architecture Kiln imports/);
  });

  test('tensor data out of range', async () => {
    await expectRefused('data-range', good.subarray(0, good.length - 4096), /tensor data out of range: offset \d+ \+ \d+ bytes is past the end/);
  });
});
