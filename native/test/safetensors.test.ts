// safetensors: the validated reader (readSafetensors) and the gathering, casting writer (writeSafetensors).
// Files are built byte by byte here, and expected bit patterns are computed independently in TypeScript.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative, type TensorWriteSpec } from '@kiln/native';

const native = loadNative();
let dir: string;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-safetensors-'));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

// ---- building files by hand ------------------------------------------------------------------------

function rawFile(name: string, header: string, data: Buffer = Buffer.alloc(0), headerLength?: number): string {
  const head = Buffer.from(header, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(headerLength ?? head.length));
  const file = path.join(dir, name);
  fs.writeFileSync(file, Buffer.concat([len, head, data]));
  return file;
}

interface HandTensor {
  dtype: string;
  shape: number[];
  data: Buffer;
}

/** A well-formed safetensors file, tensors laid out in the order given. */
function safetensorsFile(name: string, tensors: Record<string, HandTensor>, metadata?: Record<string, string>): string {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const [key, t] of Object.entries(tensors)) {
    header[key] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.length] };
    offset += t.data.length;
  }
  return rawFile(name, JSON.stringify(header), Buffer.concat(Object.values(tensors).map((t) => t.data)));
}

const f32 = (values: number[]): Buffer => Buffer.from(new Float32Array(values).buffer);
const u16 = (values: number[]): Buffer => Buffer.from(new Uint16Array(values).buffer);

// ---- reference conversions (exact arithmetic on doubles, not bit tricks) ---------------------------

function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

function f32Bits(x: number): number {
  const a = new Float32Array([x]);
  return new Uint32Array(a.buffer)[0];
}

/** float32 exponent of |v| (normals), -126 for subnormals. */
function exponentOf(v: number): number {
  const e = (f32Bits(v) >>> 23) & 0xff;
  return e === 0 ? -126 : e - 127;
}

function toBf16Bits(x: number): number {
  const v = Math.fround(x);
  const sign = f32Bits(v) & 0x80000000 ? 0x8000 : 0;
  const a = Math.abs(v);
  if (a === Infinity) return sign | 0x7f80;
  const unit = 2 ** (exponentOf(a) - 7); // bf16 keeps 7 mantissa bits
  const q = Math.fround(roundHalfEven(a / unit) * unit); // 2^128 becomes Infinity: overflow to inf
  return sign | (f32Bits(q) >>> 16);
}

function toF16Bits(x: number): number {
  const v = Math.fround(x);
  const sign = f32Bits(v) & 0x80000000 ? 0x8000 : 0;
  const a = Math.abs(v);
  if (a >= 65520) return sign | 0x7c00; // halfway between 65504 and 2^16 rounds to even: inf
  if (a < 2 ** -14) return sign | roundHalfEven(a / 2 ** -24); // subnormal (1024 encodes the smallest normal)
  let e = exponentOf(a);
  let q = roundHalfEven((a / 2 ** e - 1) * 1024);
  if (q === 1024) {
    q = 0;
    e += 1;
  }
  return sign | ((e + 15) << 10) | q;
}

function bf16ToNumber(bits: number): number {
  return new Float32Array(new Uint32Array([bits << 16]).buffer)[0];
}

function f16ToNumber(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const e = (bits >> 10) & 0x1f;
  const m = bits & 0x3ff;
  if (e === 0x1f) return m ? NaN : sign * Infinity;
  if (e === 0) return sign * m * 2 ** -24;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

async function tensorBytes(file: string, name: string): Promise<Buffer> {
  const info = await native.readSafetensors(file);
  const t = info.tensors.find((x) => x.name === name);
  if (!t) throw new Error(`no tensor ${name} in ${file}`);
  return fs.readFileSync(file).subarray(t.byteOffset, t.byteOffset + t.byteLength);
}

const asU16 = (b: Buffer): number[] => Array.from({ length: b.length / 2 }, (_, i) => b.readUInt16LE(2 * i));
const asF32 = (b: Buffer): number[] => Array.from({ length: b.length / 4 }, (_, i) => b.readFloatLE(4 * i));
const bitsOfF32 = (b: Buffer): number[] => Array.from({ length: b.length / 4 }, (_, i) => b.readUInt32LE(4 * i));

// Values chosen for the rounding cases: ties to even in both half formats, the half overflow boundary,
// half subnormals and underflow, and a float32 max that overflows bfloat16.
const W = [1, -2.5, Math.PI, 1 / 3, 65504, 65520, 1e-5, 1e-8, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -11, 1 + 3 * 2 ** -11];
const V = [-0, 3.4028234663852886e38, 2 ** -24, 2 ** -25, 0.1, -0.2, 100, -1e-3];

// ---- the reader ------------------------------------------------------------------------------------

describe('readSafetensors', () => {
  test('reports a good file: metadata, tensors in file order, absolute offsets', async () => {
    // Written to the header in the reverse of file order: the reader sorts by offset.
    const data = Buffer.concat([f32([1, 2, 3, 4, 5, 6]), u16([0x3f80, 0x4000])]);
    const header = JSON.stringify({
      b: { dtype: 'BF16', shape: [2], data_offsets: [24, 28] },
      __metadata__: { format: 'pt', note: 'x"y' },
      a: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] },
    });
    const file = rawFile('good.safetensors', header, data);
    const info = await native.readSafetensors(file);
    const headerLength = Buffer.byteLength(header);
    expect(info).toEqual({
      path: file,
      fileSize: 8 + headerLength + 28,
      metadata: { format: 'pt', note: 'x"y' },
      tensors: [
        { name: 'a', dtype: 'F32', shape: [2, 3], byteOffset: 8 + headerLength, byteLength: 24 },
        { name: 'b', dtype: 'BF16', shape: [2], byteOffset: 8 + headerLength + 24, byteLength: 4 },
      ],
    });
  });

  test('accepts scalars, empty tensors and an empty header object', async () => {
    const file = safetensorsFile('scalars.safetensors', {
      s: { dtype: 'F32', shape: [], data: f32([7]) },
      e: { dtype: 'I64', shape: [0, 5], data: Buffer.alloc(0) },
    });
    const info = await native.readSafetensors(file);
    expect(info.tensors.map((t) => [t.name, t.shape, t.byteLength])).toEqual([
      ['s', [], 4],
      ['e', [0, 5], 0],
    ]);
    const empty = rawFile('empty.safetensors', '{}');
    expect((await native.readSafetensors(empty)).tensors).toEqual([]);
  });

  test('a missing file', async () => {
    const file = path.join(dir, 'nope.safetensors');
    await expect(native.readSafetensors(file)).rejects.toThrow(`${file}: cannot open (No such file or directory)`);
  });

  test('a directory', async () => {
    await expect(native.readSafetensors(dir)).rejects.toThrow(`${dir}: is a directory`);
  });

  test('a truncated file (< 8 bytes)', async () => {
    const file = path.join(dir, 'short.safetensors');
    fs.writeFileSync(file, Buffer.from([1, 2, 3]));
    await expect(native.readSafetensors(file)).rejects.toThrow(
      `${file}: file is 3 bytes, too short for a safetensors header length (8 bytes)`,
    );
  });

  test('a header length past the end of the file', async () => {
    const file = rawFile('past.safetensors', '{}', Buffer.alloc(0), 1000);
    await expect(native.readSafetensors(file)).rejects.toThrow(
      `${file}: header length 1000 is past the end of the file (10 bytes)`,
    );
  });

  test('invalid JSON', async () => {
    const file = rawFile('badjson.safetensors', '{"a": {"dtype": "F32",}}');
    await expect(native.readSafetensors(file)).rejects.toThrow(new RegExp(`^${escape(file)}: invalid header JSON: .*at byte 22`));
    const trailing = rawFile('trailing.safetensors', '{} x');
    await expect(native.readSafetensors(trailing)).rejects.toThrow(/unexpected data after the JSON value/);
    const dup = rawFile('dup.safetensors', '{"a": 1, "a": 2}');
    await expect(native.readSafetensors(dup)).rejects.toThrow(/duplicate key "a"/);
    const badUtf8 = rawFile('utf8.safetensors', '{"\\ud800": 1}');
    await expect(native.readSafetensors(badUtf8)).rejects.toThrow(/surrogate/);
  });

  test('a JSON bomb (deep nesting)', async () => {
    const file = rawFile('bomb.safetensors', '['.repeat(100000) + ']'.repeat(100000));
    await expect(native.readSafetensors(file)).rejects.toThrow(
      new RegExp(`^${escape(file)}: invalid header JSON: nesting deeper than \\d+ levels`),
    );
  });

  test('an unknown dtype', async () => {
    const file = rawFile('dtype.safetensors', JSON.stringify({ w: { dtype: 'Q4', shape: [2], data_offsets: [0, 2] } }), Buffer.alloc(2));
    await expect(native.readSafetensors(file)).rejects.toThrow(`${file}: tensor "w": unknown dtype "Q4"`);
  });

  test('an entry with extra or missing keys, or a bad shape', async () => {
    const extra = rawFile('extra.safetensors', JSON.stringify({ w: { dtype: 'F32', shape: [1], data_offsets: [0, 4], x: 1 } }), f32([1]));
    await expect(native.readSafetensors(extra)).rejects.toThrow(`${extra}: tensor "w": unexpected key "x"`);
    const missing = rawFile('missing.safetensors', JSON.stringify({ w: { dtype: 'F32', shape: [1] } }), f32([1]));
    await expect(native.readSafetensors(missing)).rejects.toThrow(`${missing}: tensor "w": "data_offsets" is missing`);
    const negative = rawFile('neg.safetensors', JSON.stringify({ w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }), f32([1]));
    await expect(native.readSafetensors(negative)).rejects.toThrow(`${negative}: tensor "w": shape dimension 0 is not a non-negative integer`);
    const huge = rawFile('huge.safetensors', JSON.stringify({ w: { dtype: 'F32', shape: [2 ** 40, 2 ** 40], data_offsets: [0, 4] } }), f32([1]));
    await expect(native.readSafetensors(huge)).rejects.toThrow(`${huge}: tensor "w": shape [1099511627776, 1099511627776] has too many elements`);
  });

  test('a shape that does not match the byte count', async () => {
    const file = rawFile('mismatch.safetensors', JSON.stringify({ w: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 20] } }), Buffer.alloc(24));
    await expect(native.readSafetensors(file)).rejects.toThrow(
      `${file}: tensor "w": dtype F32 shape [2, 3] needs 24 bytes but data_offsets [0, 20] span 20`,
    );
  });

  test('overlapping tensors (both named)', async () => {
    const header = JSON.stringify({
      'model.a': { dtype: 'F32', shape: [4], data_offsets: [0, 16] },
      'model.b': { dtype: 'F32', shape: [2], data_offsets: [8, 16] },
    });
    const file = rawFile('overlap.safetensors', header, Buffer.alloc(16));
    await expect(native.readSafetensors(file)).rejects.toThrow(
      `${file}: tensors "model.a" data_offsets [0, 16] and "model.b" data_offsets [8, 16] overlap`,
    );
  });

  test('offsets outside the file', async () => {
    const name = 'model.layers.0.mlp.up_proj.weight';
    const file = rawFile('outside.safetensors', JSON.stringify({ [name]: { dtype: 'F32', shape: [4], data_offsets: [8, 24] } }), Buffer.alloc(16));
    await expect(native.readSafetensors(file)).rejects.toThrow(
      `${file}: tensor "${name}": data_offsets [8, 24] end past the data region (16 bytes)`,
    );
  });

  test('a bad argument is a TypeError', async () => {
    // Compared by name: the addon's TypeError comes from Node's realm, not the test sandbox's.
    await expect(native.readSafetensors(42 as unknown as string)).rejects.toMatchObject({
      name: 'TypeError',
      message: 'readSafetensors: path must be a string',
    });
  });
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// ---- the writer -------------------------------------------------------------------------------------

describe('writeSafetensors', () => {
  let src: string;
  beforeAll(() => {
    src = safetensorsFile('src.safetensors', {
      w: { dtype: 'F32', shape: [3, 4], data: f32(W) },
      v: { dtype: 'F32', shape: [2, 4], data: f32(V) },
      ids: { dtype: 'I64', shape: [2], data: Buffer.alloc(16) },
    });
  });

  test('reference conversions agree with known bit patterns', () => {
    expect(toBf16Bits(1)).toBe(0x3f80);
    expect(toBf16Bits(1 + 2 ** -8)).toBe(0x3f80); // tie: even
    expect(toBf16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82); // tie: up to even
    expect(toF16Bits(1)).toBe(0x3c00);
    expect(toF16Bits(65504)).toBe(0x7bff);
    expect(toF16Bits(65520)).toBe(0x7c00);
    expect(toF16Bits(2 ** -24)).toBe(0x0001);
    expect(toF16Bits(2 ** -25)).toBe(0x0000);
    expect(toF16Bits(-2.5)).toBe(0xc100);
  });

  test('casts f32 -> bf16 -> f32 and f32 -> f16 -> f32, rounding to nearest even', async () => {
    const out = path.join(dir, 'cast.safetensors');
    const whole = (tensor: string) => [{ file: src, tensor }];
    await native.writeSafetensors({
      path: out,
      tensors: [
        { name: 'w.bf16', dtype: 'bfloat16', shape: [3, 4], sources: whole('w') },
        { name: 'w.f16', dtype: 'float16', shape: [3, 4], sources: whole('w') },
        { name: 'v.bf16', dtype: 'bfloat16', shape: [2, 4], sources: whole('v') },
        { name: 'v.f16', dtype: 'float16', shape: [8], sources: whole('v') },
        { name: 'w.f32', dtype: 'float32', shape: [12], sources: whole('w') },
      ],
    });
    expect(asU16(await tensorBytes(out, 'w.bf16'))).toEqual(W.map(toBf16Bits));
    expect(asU16(await tensorBytes(out, 'w.f16'))).toEqual(W.map(toF16Bits));
    expect(asU16(await tensorBytes(out, 'v.bf16'))).toEqual(V.map(toBf16Bits));
    expect(asU16(await tensorBytes(out, 'v.f16'))).toEqual(V.map(toF16Bits));
    expect(bitsOfF32(await tensorBytes(out, 'w.f32'))).toEqual(W.map(f32Bits));

    // And back to float32 (exact), and between the half formats (through float32, also exact).
    const back = path.join(dir, 'back.safetensors');
    await native.writeSafetensors({
      path: back,
      tensors: [
        { name: 'from.bf16', dtype: 'float32', shape: [3, 4], sources: [{ file: out, tensor: 'w.bf16' }] },
        { name: 'from.f16', dtype: 'float32', shape: [3, 4], sources: [{ file: out, tensor: 'w.f16' }] },
        { name: 'f16.to.bf16', dtype: 'bfloat16', shape: [3, 4], sources: [{ file: out, tensor: 'w.f16' }] },
      ],
    });
    expect(asF32(await tensorBytes(back, 'from.bf16'))).toEqual(W.map((x) => bf16ToNumber(toBf16Bits(x))));
    expect(asF32(await tensorBytes(back, 'from.f16'))).toEqual(W.map((x) => f16ToNumber(toF16Bits(x))));
    expect(asU16(await tensorBytes(back, 'f16.to.bf16'))).toEqual(W.map((x) => toBf16Bits(f16ToNumber(toF16Bits(x)))));
  });

  test('transposes, slices rows and concatenates along dimension 0', async () => {
    const out = path.join(dir, 'gather.safetensors');
    await native.writeSafetensors({
      path: out,
      metadata: { format: 'pt', 'quote"key': 'line\nbreak \u00e9 \u{1f600}' },
      tensors: [
        { name: 'wt', dtype: 'float32', shape: [4, 3], sources: [{ file: src, tensor: 'w', transpose: true }] },
        { name: 'rows', dtype: 'float32', shape: [2, 4], sources: [{ file: src, tensor: 'w', rowStart: 1 }] },
        { name: 'one', dtype: 'float32', shape: [1, 4], sources: [{ file: src, tensor: 'w', rowStart: 1, rowCount: 1 }] },
        {
          name: 'cat',
          dtype: 'float32',
          shape: [6, 4],
          sources: [
            { file: src, tensor: 'v' },
            { file: src, tensor: 'w', rowStart: 2, rowCount: 1 },
            { file: src, tensor: 'w', rowCount: 3 },
          ],
        },
        // Transpose first, then the slice: rows 1..2 of w^T are columns 1..2 of w.
        { name: 'wt.rows', dtype: 'bfloat16', shape: [2, 3], sources: [{ file: src, tensor: 'w', transpose: true, rowStart: 1, rowCount: 2 }] },
        { name: 'empty', dtype: 'float16', shape: [0, 4], sources: [{ file: src, tensor: 'w', rowStart: 3 }] },
      ],
    });
    const w = (r: number, c: number) => Math.fround(W[r * 4 + c]);
    const rowsOf = (r0: number, n: number) => W.slice(r0 * 4, (r0 + n) * 4).map(Math.fround);
    const wt: number[] = [];
    for (let c = 0; c < 4; c++) for (let r = 0; r < 3; r++) wt.push(w(r, c));
    expect(asF32(await tensorBytes(out, 'wt'))).toEqual(wt);
    expect(asF32(await tensorBytes(out, 'rows'))).toEqual(rowsOf(1, 2));
    expect(asF32(await tensorBytes(out, 'one'))).toEqual(rowsOf(1, 1));
    expect(asF32(await tensorBytes(out, 'cat'))).toEqual([...V.map(Math.fround), ...rowsOf(2, 1), ...rowsOf(0, 3)]);
    expect(asU16(await tensorBytes(out, 'wt.rows'))).toEqual(wt.slice(3, 9).map(toBf16Bits));

    const info = await native.readSafetensors(out);
    expect(info.metadata).toEqual({ format: 'pt', 'quote"key': 'line\nbreak \u00e9 \u{1f600}' });
    expect(info.tensors.map((t) => [t.name, t.dtype, t.shape])).toEqual([
      ['wt', 'F32', [4, 3]],
      ['rows', 'F32', [2, 4]],
      ['one', 'F32', [1, 4]],
      ['cat', 'F32', [6, 4]],
      ['wt.rows', 'BF16', [2, 3]],
      ['empty', 'F16', [0, 4]],
    ]);
    // The data region starts on a 64-byte boundary and the tensors are contiguous, as the reference
    // implementation requires (it rejects gaps between tensors).
    expect(info.tensors[0].byteOffset % 64).toBe(0);
    for (let i = 1; i < info.tensors.length; i++) {
      expect(info.tensors[i].byteOffset).toBe(info.tensors[i - 1].byteOffset + info.tensors[i - 1].byteLength);
    }
    const last = info.tensors[info.tensors.length - 1];
    expect(info.fileSize).toBe(last.byteOffset + last.byteLength);
    // The header is plain JSON a standard parser reads.
    const buf = fs.readFileSync(out);
    const header = JSON.parse(buf.subarray(8, 8 + Number(buf.readBigUInt64LE(0))).toString('utf8'));
    expect(header.wt).toEqual({ dtype: 'F32', shape: [4, 3], data_offsets: [0, 48] });
  });

  test('streams tensors larger than one conversion chunk', async () => {
    // 300 x 70 = 21000 elements: more than the writer's 16384-element chunk, so a transposed read
    // resumes mid-row at a chunk boundary.
    const rows = 300;
    const cols = 70;
    const values = Array.from({ length: rows * cols }, (_, i) => Math.sin(i) * 1000);
    const big = safetensorsFile('big.safetensors', { m: { dtype: 'F32', shape: [rows, cols], data: f32(values) } });
    const out = path.join(dir, 'big-out.safetensors');
    await native.writeSafetensors({
      path: out,
      tensors: [
        { name: 'mt', dtype: 'bfloat16', shape: [cols - 5, rows], sources: [{ file: big, tensor: 'm', transpose: true, rowStart: 5 }] },
        { name: 'm16', dtype: 'float16', shape: [rows * cols], sources: [{ file: big, tensor: 'm' }] },
      ],
    });
    const expected: number[] = [];
    for (let c = 5; c < cols; c++) for (let r = 0; r < rows; r++) expected.push(toBf16Bits(values[r * cols + c]));
    expect(asU16(await tensorBytes(out, 'mt'))).toEqual(expected);
    expect(asU16(await tensorBytes(out, 'm16'))).toEqual(values.map(toF16Bits));
  });

  /** Files in the temp dir whose names start with `base`. */
  const leftovers = (base: string) => fs.readdirSync(dir).filter((f) => f.startsWith(base));

  test('an element count mismatch names the tensor and leaves no file behind', async () => {
    const out = path.join(dir, 'bad-count.safetensors');
    const tensors: TensorWriteSpec[] = [
      { name: 'ok', dtype: 'float32', shape: [3, 4], sources: [{ file: src, tensor: 'w' }] },
      { name: 'model.embed', dtype: 'float32', shape: [4, 4], sources: [{ file: src, tensor: 'w', rowStart: 1 }] },
    ];
    await expect(native.writeSafetensors({ path: out, tensors })).rejects.toThrow(
      `${out}: tensor "model.embed": shape [4, 4] has 16 elements but its sources give 8 (8 from ${src} "w")`,
    );
    expect(leftovers('bad-count')).toEqual([]);
  });

  test('other write faults name the tensor and the source, and leave no file behind', async () => {
    const out = path.join(dir, 'bad-write.safetensors');
    const write = (spec: Partial<TensorWriteSpec>) =>
      native.writeSafetensors({ path: out, tensors: [{ name: 't', dtype: 'float32', shape: [4], sources: [], ...spec }] });
    await expect(write({ sources: [{ file: src, tensor: 'missing' }] })).rejects.toThrow(
      `${out}: tensor "t": source ${src} "missing": no such tensor in the file`,
    );
    await expect(write({ shape: [2], sources: [{ file: src, tensor: 'ids' }] })).rejects.toThrow(
      `${out}: tensor "t": source ${src} "ids": dtype I64 cannot be converted (only F32, F16 and BF16)`,
    );
    await expect(write({ sources: [{ file: src, tensor: 'w', rowStart: 2, rowCount: 2 }] })).rejects.toThrow(
      `${out}: tensor "t": source ${src} "w": rows [2, 4) are outside its 3 rows (shape [3, 4])`,
    );
    await expect(write({ sources: [{ file: path.join(dir, 'nope.safetensors'), tensor: 'w' }] })).rejects.toThrow(
      'nope.safetensors: cannot open (No such file or directory)',
    );
    const bad = rawFile('bad-source.safetensors', '{');
    await expect(write({ sources: [{ file: bad, tensor: 'w' }] })).rejects.toThrow(`${bad}: invalid header JSON`);
    await expect(
      native.writeSafetensors({
        path: out,
        tensors: [
          { name: 'x', dtype: 'float32', shape: [12], sources: [{ file: src, tensor: 'w' }] },
          { name: 'x', dtype: 'float32', shape: [12], sources: [{ file: src, tensor: 'w' }] },
        ],
      }),
    ).rejects.toThrow(`${out}: tensor "x" is listed twice`);
    expect(leftovers('bad-write')).toEqual([]);
  });

  test('a failed write does not replace an existing file', async () => {
    const out = path.join(dir, 'keep.safetensors');
    fs.writeFileSync(out, 'previous');
    await expect(
      native.writeSafetensors({ path: out, tensors: [{ name: 't', dtype: 'float32', shape: [5], sources: [{ file: src, tensor: 'w' }] }] }),
    ).rejects.toThrow(/tensor "t"/);
    expect(fs.readFileSync(out, 'utf8')).toBe('previous');
    expect(leftovers('keep')).toEqual(['keep.safetensors']);
  });

  test('an unwritable path rejects naming it', async () => {
    const out = path.join(dir, 'no-such-dir', 'x.safetensors');
    await expect(
      native.writeSafetensors({ path: out, tensors: [{ name: 't', dtype: 'float32', shape: [12], sources: [{ file: src, tensor: 'w' }] }] }),
    ).rejects.toThrow(`${out}: cannot create ${out}.tmp-`);
  });

  test('bad arguments are TypeErrors naming the field', async () => {
    await expect(native.writeSafetensors(undefined as never)).rejects.toThrow('writeSafetensors: options must be an object');
    await expect(
      native.writeSafetensors({ path: 'x', tensors: [{ name: 't', dtype: 'float8' as never, shape: [1], sources: [] }] }),
    ).rejects.toMatchObject({
      name: 'TypeError',
      message: 'writeSafetensors: options.tensors[0].dtype must be "float32", "float16" or "bfloat16", got "float8"',
    });
    await expect(
      native.writeSafetensors({ path: 'x', tensors: [{ name: 't', dtype: 'float32', shape: [1.5], sources: [] }] }),
    ).rejects.toThrow('writeSafetensors: options.tensors[0].shape[0] must be a non-negative integer');
    await expect(
      native.writeSafetensors({ path: 'x', tensors: [{ name: 't', dtype: 'float32', shape: [1], sources: [{ file: 'a', tensor: 'b', rowStart: -1 }] }] }),
    ).rejects.toThrow('writeSafetensors: options.tensors[0].sources[0].rowStart must be a non-negative integer');
    await expect(native.writeSafetensors({ path: 'x', metadata: { a: 1 as never }, tensors: [] })).rejects.toThrow(
      'writeSafetensors: options.metadata["a"] must be a string',
    );
  });
});
