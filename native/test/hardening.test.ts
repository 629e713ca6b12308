// Issue 16, in the native suite (which CI also runs under ASan + UBSan, tools/sanitize/run.sh): a
// safetensors file whose data region starts at an odd address is read and cast without misaligned
// loads (UBSan reported one at dtype.h's loadAsF32), non-finite values are refused on request naming
// the tensor, the source and the element, and oversized headers are refused naming the limit.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative } from '@kiln/native';

const native = loadNative();
let dir: string;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-native-hardening-'));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A safetensors file of one float32 tensor whose data starts at file offset 8 + header = 3 (mod 4). */
function unalignedFile(name: string, values: number[], shape: number[]): string {
  const data = Buffer.from(new Float32Array(values).buffer);
  let header = JSON.stringify({ t: { dtype: 'F32', shape, data_offsets: [0, data.length] } });
  while ((8 + Buffer.byteLength(header)) % 8 !== 3) header += ' ';
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(header)));
  const file = path.join(dir, name);
  fs.writeFileSync(file, Buffer.concat([length, Buffer.from(header), data]));
  return file;
}

const bf16 = (x: number) => {
  const b = Buffer.alloc(4);
  b.writeFloatLE(x);
  const bits = b.readUInt32LE();
  return (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
};

test('an unaligned data region is read, cast and transposed with the right values', async () => {
  const values = Array.from({ length: 12 }, (_, i) => i * 0.5 - 2.25);
  const source = unalignedFile('unaligned.safetensors', values, [3, 4]);
  const info = await native.readSafetensors(source);
  expect(info.tensors.map((t) => t.name)).toEqual(['t']);
  const out = path.join(dir, 'out.safetensors');
  await native.writeSafetensors({
    path: out,
    tensors: [
      { name: 'cast', dtype: 'bfloat16', shape: [3, 4], sources: [{ file: source, tensor: 't' }] },
      { name: 'transposed', dtype: 'float32', shape: [4, 3], sources: [{ file: source, tensor: 't', transpose: true }] },
      { name: 'copied', dtype: 'float32', shape: [3, 4], sources: [{ file: source, tensor: 't' }] },
    ],
  });
  const bytes = fs.readFileSync(out);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString());
  const data = bytes.subarray(8 + headerLength);
  const at = (name: string) => data.subarray(header[name].data_offsets[0], header[name].data_offsets[1]);
  const cast = at('cast');
  expect(Array.from({ length: 12 }, (_, i) => cast.readUInt16LE(2 * i))).toEqual(values.map(bf16));
  const transposed = at('transposed');
  const expected: number[] = [];
  for (let c = 0; c < 4; c++) for (let r = 0; r < 3; r++) expected.push(values[r * 4 + c]);
  expect(Array.from({ length: 12 }, (_, i) => transposed.readFloatLE(4 * i))).toEqual(expected);
  const copied = at('copied');
  expect(Array.from({ length: 12 }, (_, i) => copied.readFloatLE(4 * i))).toEqual(values);
});

test('rejectNonFinite refuses NaN and Infinity naming the tensor, the source and the element, leaving no file', async () => {
  for (const [value, word] of [[Number.NaN, 'NaN'], [Number.POSITIVE_INFINITY, 'Infinity'], [Number.NEGATIVE_INFINITY, '-Infinity']] as const) {
    const values = [1, 2, 3, 4, 5, 6];
    values[4] = value;
    const source = unalignedFile(`bad-${word}.safetensors`, values, [2, 3]);
    const out = path.join(dir, `bad-${word}-out.safetensors`);
    for (const dtype of ['float32', 'bfloat16'] as const) {
      await expect(
        native.writeSafetensors({ path: out, rejectNonFinite: true, tensors: [{ name: 'w', dtype, shape: [2, 3], sources: [{ file: source, tensor: 't' }] }] }),
      ).rejects.toThrow(new RegExp(`tensor "w": source .*bad-${word}\\.safetensors "t" holds ${word} \\(element 4\\)`));
      expect(fs.existsSync(out)).toBe(false);
      expect(fs.readdirSync(dir).filter((f) => f.startsWith(`bad-${word}-out`))).toEqual([]);
    }
    // Without the flag the values are kept, as before.
    await native.writeSafetensors({ path: out, tensors: [{ name: 'w', dtype: 'float32', shape: [2, 3], sources: [{ file: source, tensor: 't' }] }] });
    expect(fs.existsSync(out)).toBe(true);
  }
});

test('headers past the caps are refused naming the limit', async () => {
  const write = (name: string, json: string) => {
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
    const file = path.join(dir, name);
    fs.writeFileSync(file, Buffer.concat([length, Buffer.from(json)]));
    return file;
  };
  const metadata = Object.fromEntries(Array.from({ length: 4097 }, (_, i) => [`k${i}`, 'v']));
  await expect(native.readSafetensors(write('meta.safetensors', JSON.stringify({ __metadata__: metadata })))).rejects.toThrow(/__metadata__ has 4097 entries, more than the 4096 allowed/);
  const dims = write('dims.safetensors', JSON.stringify({ t: { dtype: 'F32', shape: Array(17).fill(1), data_offsets: [0, 4] } }) + '    ');
  await expect(native.readSafetensors(dims)).rejects.toThrow(/shape has 17 dimensions, more than the 16 allowed/);
  const many = Object.fromEntries(Array.from({ length: 65537 }, (_, i) => [`t${i}`, { dtype: 'F32', shape: [0], data_offsets: [0, 0] }]));
  await expect(native.readSafetensors(write('many.safetensors', JSON.stringify(many)))).rejects.toThrow(/65537 tensors, more than the 65536 one file may hold/);
  const withMeta = { __metadata__: { format: 'pt' }, ...Object.fromEntries(Object.entries(many).slice(0, 65536)) };
  expect((await native.readSafetensors(write('limit.safetensors', JSON.stringify(withMeta)))).tensors.length).toBe(65536);
});
