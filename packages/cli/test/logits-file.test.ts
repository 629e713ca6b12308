import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { writeFloat32Safetensors } from '@kiln/cli';

describe('writeFloat32Safetensors', () => {
  let directory: string;
  beforeEach(() => {
    directory = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-logits-'));
  });
  afterEach(() => fs.rmSync(directory, { recursive: true, force: true }));

  it('writes an aligned header and the tensors in order', async () => {
    const file = path.join(directory, 'out.safetensors');
    const a = Float32Array.from([1, 2, 3, 4, 5, 6]);
    const b = Float32Array.from([-1.5]);
    await writeFloat32Safetensors(file, [
      { name: 'context_logits', shape: [2, 3], data: a },
      { name: 'generation_logits', shape: [1, 1], data: b },
    ]);
    const bytes = fs.readFileSync(file);
    const headerLength = Number(bytes.readBigUInt64LE(0));
    expect((8 + headerLength) % 8).toBe(0);
    const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8'));
    expect(header.context_logits).toEqual({ dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] });
    expect(header.generation_logits).toEqual({ dtype: 'F32', shape: [1, 1], data_offsets: [24, 28] });
    expect(bytes.length).toBe(8 + headerLength + 28);
    const dataStart = bytes.byteOffset + 8 + headerLength;
    const data = new Float32Array(bytes.buffer.slice(dataStart, dataStart + 28));
    expect(Array.from(data)).toEqual([1, 2, 3, 4, 5, 6, -1.5]);
    expect(fs.readdirSync(directory)).toEqual(['out.safetensors']);
  });

  it('refuses a shape that does not match the data, writing nothing', async () => {
    const file = path.join(directory, 'out.safetensors');
    await expect(writeFloat32Safetensors(file, [{ name: 'x', shape: [2, 2], data: new Float32Array(3) }])).rejects.toThrow(
      'tensor x: shape [2, 2] needs 4 values, got 3',
    );
    expect(fs.readdirSync(directory)).toEqual([]);
  });

  it('names the file it cannot write and leaves no temporary file', async () => {
    const file = path.join(directory, 'missing', 'out.safetensors');
    await expect(writeFloat32Safetensors(file, [{ name: 'x', shape: [1], data: new Float32Array(1) }])).rejects.toThrow(
      `cannot write ${file}`,
    );
    expect(fs.readdirSync(directory)).toEqual([]);
  });
});
