// GGUF tensor types: the native dequantization of every type Kiln imports, bit for bit against the
// reference dequantizers of ./gguf-files.ts (written from ggml's block layouts), the native Q8_0 / Q4_0
// quantizers against ggml's reference quantizers, and llama.cpp's q/k rope permutation round trip.
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative } from '@kiln/native';
import { BLOCK, dequantizeBlock, GGML_TYPE, ggufBytes, halfToFloat, quantizeQ4_0Block, quantizeQ8_0Block, type RawTensor } from './gguf-files';
import { readTensors, toFloat32, writeTensors } from './safetensors-files';

let root: string;
beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-gguf-quants-'));
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

/** A deterministic generator (xorshift32): the same bytes on every run. */
function random(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

/** A finite half with a magnitude between 2^-10 and 2^5 (a block scale's range in real files). */
function randomHalfBits(next: () => number): number {
  const exponent = 5 + (next() % 16);
  return ((next() & 1) << 15) | (exponent << 10) | (next() & 0x3ff);
}

/** Random blocks of `type`, with every half-precision field (d, dmin, m) a finite half. */
function randomBlocks(type: number, blocks: number, seed: number): Uint8Array {
  const [, bytes] = BLOCK[type];
  const next = random(seed);
  const data = new Uint8Array(blocks * bytes);
  for (let i = 0; i < data.length; i++) data[i] = next() & 0xff;
  const halves = type === GGML_TYPE.Q6_K ? [208] : type === GGML_TYPE.Q4_0 || type === GGML_TYPE.Q8_0 ? [0] : [0, 2];
  for (let b = 0; b < blocks; b++) {
    for (const at of halves) {
      const h = randomHalfBits(next);
      data[b * bytes + at] = h & 0xff;
      data[b * bytes + at + 1] = h >> 8;
    }
  }
  return data;
}

async function importAsFloat32(name: string, tensors: RawTensor[]): Promise<Map<string, Float32Array>> {
  const gguf = path.join(root, `${name}.gguf`);
  const out = path.join(root, `${name}.safetensors`);
  await fs.writeFile(gguf, ggufBytes({}, tensors));
  await loadNative().writeSafetensorsFromGguf({
    gguf,
    path: out,
    tensors: tensors.map((t) => ({ name: t.name, tensor: t.name, dtype: 'float32' as const })),
  });
  const read = await readTensors(out);
  return new Map([...read].map(([n, t]) => [n, toFloat32(t)]));
}

function expectBitwiseEqual(actual: Float32Array, expected: ArrayLike<number>): void {
  expect(actual.length).toBe(expected.length);
  const want = Float32Array.from(expected);
  const a = new Uint32Array(actual.buffer, actual.byteOffset, actual.length);
  const b = new Uint32Array(want.buffer);
  let mismatches = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) mismatches++;
  expect(mismatches).toBe(0);
}

describe('dequantization matches the reference of the GGML format description', () => {
  const quantized: Array<[string, number]> = [
    ['Q8_0', GGML_TYPE.Q8_0],
    ['Q4_0', GGML_TYPE.Q4_0],
    ['Q4_1', GGML_TYPE.Q4_1],
    ['Q4_K', GGML_TYPE.Q4_K],
    ['Q5_K', GGML_TYPE.Q5_K],
    ['Q6_K', GGML_TYPE.Q6_K],
  ];
  test.each(quantized)('%s: 3 rows of 2 super-blocks, every element bit-exact', async (name, type) => {
    const [perBlock] = BLOCK[type];
    const rowElements = 512;
    const rows = 3;
    const blocks = (rowElements / perBlock) * rows;
    const data = randomBlocks(type, blocks, 1234 + type);
    const result = await importAsFloat32(name, [{ name: 'w', dims: [rowElements, rows], type, data }]);
    const expected: number[] = [];
    const [, bytes] = BLOCK[type];
    for (let b = 0; b < blocks; b++) expected.push(...dequantizeBlock(type, data.subarray(b * bytes, (b + 1) * bytes)));
    expectBitwiseEqual(result.get('w')!, expected);
    // Not all zeros or all equal: the random blocks exercise the whole value range.
    expect(new Set(expected).size).toBeGreaterThan(rowElements);
  });

  test('F32, F16 and BF16 convert exactly', async () => {
    const next = random(99);
    const halves = Array.from({ length: 64 }, () => randomHalfBits(next));
    const f16 = new Uint8Array(new Uint16Array(halves).buffer);
    const bf16Bits = Array.from({ length: 64 }, () => (next() & 0x7f7f) | 0x3c00);
    const bf16 = new Uint8Array(new Uint16Array(bf16Bits).buffer);
    const f32Values = Float32Array.from({ length: 64 }, () => (next() / 2 ** 32 - 0.5) * 7);
    const f32 = new Uint8Array(f32Values.buffer);
    const result = await importAsFloat32('floats', [
      { name: 'f16', dims: [64], type: GGML_TYPE.F16, data: f16 },
      { name: 'bf16', dims: [32, 2], type: GGML_TYPE.BF16, data: bf16 },
      { name: 'f32', dims: [16, 2, 2], type: GGML_TYPE.F32, data: f32 },
    ]);
    expectBitwiseEqual(result.get('f16')!, halves.map(halfToFloat));
    expectBitwiseEqual(result.get('bf16')!, bf16Bits.map((h) => new Float32Array(new Uint32Array([h << 16]).buffer)[0]));
    expectBitwiseEqual(result.get('f32')!, f32Values);
  });
});

describe('export quantizers', () => {
  async function exportTensor(type: 'Q8_0' | 'Q4_0', values: Float32Array, rows: number): Promise<Uint8Array> {
    const source = path.join(root, `${type}-source.safetensors`);
    await writeTensors(source, new Map([['w', { dtype: 'F32', shape: [rows, values.length / rows], data: Buffer.from(values.buffer) }]]));
    const out = path.join(root, `${type}.gguf`);
    const native = loadNative();
    const result = await native.writeGguf({ path: out, metadata: [], tensors: [{ name: 'w', type, sources: [{ file: source, tensor: 'w' }] }] });
    expect(result.errors).toHaveLength(1);
    const info = await native.readGguf(out);
    const t = info.tensors[0];
    expect(t.type).toBe(type);
    expect(t.shape).toEqual([rows, values.length / rows]);
    return new Uint8Array((await fs.readFile(out)).subarray(t.byteOffset, t.byteOffset + t.byteLength));
  }

  function testValues(n: number): Float32Array {
    const next = random(7);
    // Gaussian-like weights with a few outliers and an all-zero block (d = 0 must give q = 0).
    const values = Float32Array.from({ length: n }, (_, i) => {
      if (i >= 64 && i < 96) return 0;
      const u = (next() + next() + next()) / 2 ** 32 / 3 - 0.5;
      return i % 97 === 5 ? u * 40 : u * 0.2;
    });
    return values;
  }

  test.each([
    ['Q8_0', quantizeQ8_0Block, 34],
    ['Q4_0', quantizeQ4_0Block, 18],
  ] as const)('%s: byte-identical to ggml\'s reference quantizer', async (type, reference, blockBytes) => {
    const values = testValues(4 * 128);
    const bytes = await exportTensor(type, values, 4);
    const expected = new Uint8Array(bytes.length);
    for (let b = 0; b < values.length / 32; b++) expected.set(reference(values.subarray(b * 32, (b + 1) * 32)), b * blockBytes);
    expect(Buffer.from(bytes).equals(Buffer.from(expected))).toBe(true);
  });
});

describe("llama.cpp's q/k rope permutation", () => {
  test('export permutes as convert_hf_to_gguf (reshape(heads, 2, rows/heads/2, cols).swapaxes(1, 2)); import undoes it', async () => {
    const heads = 3;
    const headDim = 8;
    const cols = 32;
    const rows = heads * headDim;
    const values = Float32Array.from({ length: rows * cols }, (_, i) => i);
    const source = path.join(root, 'rope-source.safetensors');
    await writeTensors(source, new Map([['q', { dtype: 'F32', shape: [rows, cols], data: Buffer.from(values.buffer) }]]));
    const gguf = path.join(root, 'rope.gguf');
    const native = loadNative();
    await native.writeGguf({ path: gguf, metadata: [], tensors: [{ name: 'q', type: 'F32', sources: [{ file: source, tensor: 'q' }], permuteHeads: heads }] });
    const info = await native.readGguf(gguf);
    const stored = new Float32Array(new Uint8Array((await fs.readFile(gguf)).subarray(info.tensors[0].byteOffset, info.tensors[0].byteOffset + info.tensors[0].byteLength)).buffer);
    const half = headDim / 2;
    for (let h = 0; h < heads; h++) {
      for (let j = 0; j < half; j++) {
        for (let s = 0; s < 2; s++) {
          // numpy: out[h, j, s] = in[h, s, j] for the (heads, 2, half) row index.
          const outRow = h * headDim + j * 2 + s;
          const inRow = h * headDim + s * half + j;
          expect(stored[outRow * cols]).toBe(values[inRow * cols]);
        }
      }
    }
    const back = path.join(root, 'rope-back.safetensors');
    await native.writeSafetensorsFromGguf({ gguf, path: back, tensors: [{ name: 'q', tensor: 'q', dtype: 'float32', unpermuteHeads: heads }] });
    expectBitwiseEqual(toFloat32((await readTensors(back)).get('q')!), values);
  });
});
