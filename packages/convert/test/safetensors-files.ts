// Test helpers that read and craft safetensors files byte by byte, independently of the native code
// under test (so a broken reader cannot hide behind itself).
import { promises as fs } from 'node:fs';

export interface RawEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

export interface RawFile {
  header: Record<string, RawEntry>;
  metadata?: Record<string, string>;
  data: Buffer;
}

export async function readRaw(file: string): Promise<RawFile> {
  const bytes = await fs.readFile(file);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const json = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, unknown>;
  const { __metadata__: metadata, ...header } = json;
  return {
    header: header as Record<string, RawEntry>,
    metadata: metadata as Record<string, string> | undefined,
    data: bytes.subarray(8 + headerLength),
  };
}

/** Writes exactly the header and data given: no validation, so tests can craft corrupt files. */
export async function writeRaw(file: string, raw: RawFile): Promise<void> {
  const json = JSON.stringify(raw.metadata ? { __metadata__: raw.metadata, ...raw.header } : raw.header);
  const padded = json + ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(padded)));
  await fs.writeFile(file, Buffer.concat([length, Buffer.from(padded, 'utf8'), raw.data]));
}

export interface Tensor {
  dtype: string;
  shape: number[];
  data: Buffer;
}

/** The tensors of a file, each with its own bytes, in file order. */
export async function readTensors(file: string): Promise<Map<string, Tensor>> {
  const raw = await readRaw(file);
  const entries = Object.entries(raw.header).sort((a, b) => a[1].data_offsets[0] - b[1].data_offsets[0]);
  return new Map(
    entries.map(([name, e]) => [
      name,
      { dtype: e.dtype, shape: e.shape, data: Buffer.from(raw.data.subarray(e.data_offsets[0], e.data_offsets[1])) },
    ]),
  );
}

/** Writes a well-formed file with the tensors packed in order. */
export async function writeTensors(file: string, tensors: Map<string, Tensor>, metadata?: Record<string, string>): Promise<void> {
  const header: Record<string, RawEntry> = {};
  const chunks: Buffer[] = [];
  let offset = 0;
  for (const [name, t] of tensors) {
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.length] };
    chunks.push(t.data);
    offset += t.data.length;
  }
  await writeRaw(file, { header, metadata, data: Buffer.concat(chunks) });
}

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 31) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/** Decodes F32 / F16 / BF16 bytes into float32 values. */
export function toFloat32(t: Tensor): Float32Array {
  const n = t.shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    if (t.dtype === 'F32') out[i] = t.data.readFloatLE(i * 4);
    else if (t.dtype === 'F16') out[i] = halfToFloat(t.data.readUInt16LE(i * 2));
    else if (t.dtype === 'BF16') out[i] = new Float32Array(new Uint32Array([t.data.readUInt16LE(i * 2) << 16]).buffer)[0];
    else throw new Error(`cannot decode ${t.dtype}`);
  }
  return out;
}

/** float32 -> bfloat16 bits, round to nearest even (finite values). */
export function bf16Bits(value: number): number {
  const bits = new Uint32Array(new Float32Array([value]).buffer)[0];
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Row-major transpose of a [rows, cols] float array. */
export function transpose(values: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(values.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = values[r * cols + c];
  return out;
}
