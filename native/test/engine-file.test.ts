// The `.engine` container (docs/engine-format.md): the writer (writeEngine) and the loader's structural
// checks, through inspectEngine. The layout is re-derived here byte by byte, with an independent XXH64.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadNative, type EngineWeightSpec } from '@kiln/native';

const native = loadNative();
let dir: string;
let src: string;

// ---- XXH64 (seed 0), straight from the spec, on BigInts ---------------------------------------------

const MASK = (1n << 64n) - 1n;
const P1 = 0x9e3779b185ebca87n;
const P2 = 0xc2b2ae3d27d4eb4fn;
const P3 = 0x165667b19e3779f9n;
const P4 = 0x85ebca77c2b2ae63n;
const P5 = 0x27d4eb2f165667c5n;
const rotl = (x: bigint, r: number) => ((x << BigInt(r)) | (x >> BigInt(64 - r))) & MASK;
const mul = (a: bigint, b: bigint) => (a * b) & MASK;
const add = (a: bigint, b: bigint) => (a + b) & MASK;
const round = (acc: bigint, lane: bigint) => mul(rotl(add(acc, mul(lane, P2)), 31), P1);

function xxh64(data: Buffer): string {
  const n = data.length;
  let p = 0;
  let acc: bigint;
  if (n >= 32) {
    const v = [add(P1, P2), P2, 0n, (MASK + 1n - P1) & MASK];
    for (; p + 32 <= n; p += 32) for (let i = 0; i < 4; i++) v[i] = round(v[i], data.readBigUInt64LE(p + 8 * i));
    acc = add(add(rotl(v[0], 1), rotl(v[1], 7)), add(rotl(v[2], 12), rotl(v[3], 18)));
    for (let i = 0; i < 4; i++) acc = add(mul(acc ^ round(0n, v[i]), P1), P4);
  } else {
    acc = P5;
  }
  acc = add(acc, BigInt(n));
  for (; p + 8 <= n; p += 8) acc = add(mul(rotl(acc ^ round(0n, data.readBigUInt64LE(p)), 27), P1), P4);
  if (p + 4 <= n) {
    acc = add(mul(rotl(acc ^ mul(BigInt(data.readUInt32LE(p)), P1), 23), P2), P3);
    p += 4;
  }
  for (; p < n; p++) acc = mul(rotl(acc ^ mul(BigInt(data[p]), P5), 11), P1);
  acc ^= acc >> 33n;
  acc = mul(acc, P2);
  acc ^= acc >> 29n;
  acc = mul(acc, P3);
  acc ^= acc >> 32n;
  return acc.toString(16).padStart(16, '0');
}

// ---- fixtures --------------------------------------------------------------------------------------

const f32 = (values: number[]): Buffer => Buffer.from(new Float32Array(values).buffer);
const W = Array.from({ length: 32 }, (_, i) => i * 0.25 - 3); // [4, 8], exact in bfloat16
const B = Array.from({ length: 8 }, (_, i) => i + 0.5);

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-engine-'));
  const data = Buffer.concat([f32(W), f32(B)]);
  const header = JSON.stringify({
    w: { dtype: 'F32', shape: [4, 8], data_offsets: [0, 128] },
    b: { dtype: 'F32', shape: [8], data_offsets: [128, 160] },
  });
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(header)));
  src = path.join(dir, 'model.safetensors');
  fs.writeFileSync(src, Buffer.concat([len, Buffer.from(header), data]));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

interface HeaderWeight {
  name: string;
  dtype: string;
  shape: number[];
  offset: number;
  byteLength: number;
}

function engineHeader(weights: HeaderWeight[], extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    format: 'kiln-engine',
    formatVersion: 1,
    target: { backend: 'cpu', isa: 'generic' },
    limits: { maxBatchSize: 1, maxSeqLen: 8, maxNumTokens: 8, maxLogitRows: 1 },
    weights,
    ops: [],
    ...extra,
  });
}

const TABLE: HeaderWeight[] = [
  { name: 'w.bf16', dtype: 'bfloat16', shape: [4, 8], offset: 0, byteLength: 64 },
  { name: 'w.t', dtype: 'float32', shape: [8, 4], offset: 64, byteLength: 128 },
  { name: 'inv', dtype: 'float32', shape: [3], offset: 192, byteLength: 12 },
  { name: 'b.f16', dtype: 'float16', shape: [2, 8], offset: 256, byteLength: 32 },
];
const INV = new Float32Array([1, 0.5, 0.25]);
const SPECS = (): EngineWeightSpec[] => [
  { name: 'w.bf16', dtype: 'bfloat16', shape: [4, 8], sources: [{ file: src, tensor: 'w' }] },
  { name: 'w.t', dtype: 'float32', shape: [8, 4], sources: [{ file: src, tensor: 'w', transpose: true }] },
  { name: 'inv', dtype: 'float32', shape: [3], data: INV },
  { name: 'b.f16', dtype: 'float16', shape: [2, 8], sources: [{ file: src, tensor: 'b' }, { file: src, tensor: 'b' }] },
];

async function writeGood(name: string): Promise<{ file: string; header: string; bytes: Buffer }> {
  const file = path.join(dir, name);
  const header = engineHeader(TABLE);
  await native.writeEngine({ path: file, header, weights: SPECS() });
  return { file, header, bytes: fs.readFileSync(file) };
}

/** Writes `bytes` with a recomputed, valid trailer, so the loader gets past the checksum. */
function withChecksum(name: string, bytes: Buffer): string {
  const out = Buffer.from(bytes);
  out.writeBigUInt64LE(BigInt('0x' + xxh64(out.subarray(0, out.length - 8))), out.length - 8);
  const file = path.join(dir, name);
  fs.writeFileSync(file, out);
  return file;
}

const leftovers = (base: string) => fs.readdirSync(dir).filter((f) => f.startsWith(base));

// ---- tests -----------------------------------------------------------------------------------------

test('the reference XXH64 matches the published test vectors', () => {
  expect(xxh64(Buffer.from(''))).toBe('ef46db3751d8e999');
  expect(xxh64(Buffer.from('a'))).toBe('d24ec4f1a98c6e5b');
  expect(xxh64(Buffer.from('abc'))).toBe('44bc2cf5ad770999');
  expect(xxh64(Buffer.from('Nobody inspects the spammish repetition'))).toBe('fbcea83c8a378bf1');
});

test('writeEngine lays the file out as docs/engine-format.md says, and inspectEngine reads it back', async () => {
  const file = path.join(dir, 'rank0.engine');
  const header = engineHeader(TABLE);
  const result = await native.writeEngine({ path: file, header, weights: SPECS() });
  const bytes = fs.readFileSync(file);
  expect(result.fileSize).toBe(bytes.length);

  expect(bytes.subarray(0, 8).toString('latin1')).toBe('KILNENG\0');
  expect(bytes.readUInt32LE(8)).toBe(1);
  expect(bytes.readUInt32LE(12)).toBe(0);
  const h = Number(bytes.readBigUInt64LE(16));
  expect(h).toBe(Buffer.byteLength(header));
  expect(bytes.subarray(24, 24 + h).toString('utf8')).toBe(header);
  const dataStart = Math.ceil((24 + h) / 64) * 64;
  expect(bytes.subarray(24 + h, dataStart).every((b) => b === 0)).toBe(true);
  expect(bytes.length).toBe(dataStart + 256 + 32 + 8);

  const at = (offset: number, length: number) => bytes.subarray(dataStart + offset, dataStart + offset + length);
  // W is exact in bfloat16: its bits are the top halves of the float32 bits.
  const wBits = Array.from(new Uint32Array(new Float32Array(W).buffer), (x) => x >>> 16);
  expect(Array.from({ length: 32 }, (_, i) => at(0, 64).readUInt16LE(2 * i))).toEqual(wBits);
  const wt: number[] = [];
  for (let c = 0; c < 8; c++) for (let r = 0; r < 4; r++) wt.push(W[r * 8 + c]);
  expect(Array.from({ length: 32 }, (_, i) => at(64, 128).readFloatLE(4 * i))).toEqual(wt);
  expect(Array.from({ length: 3 }, (_, i) => at(192, 12).readFloatLE(4 * i))).toEqual([1, 0.5, 0.25]);
  expect(at(204, 52).every((b) => b === 0)).toBe(true); // padding up to the next 64-byte offset
  // B = i + 0.5 for i < 8 is exact in float16: 1 sign, 5 exponent, 10 mantissa bits.
  const half = (x: number) => {
    const e = Math.floor(Math.log2(x));
    return ((e + 15) << 10) | ((x / 2 ** e - 1) * 1024);
  };
  expect(Array.from({ length: 16 }, (_, i) => at(256, 32).readUInt16LE(2 * i))).toEqual([...B, ...B].map(half));

  const checksum = xxh64(bytes.subarray(0, bytes.length - 8));
  expect(result.checksum).toBe(checksum);
  expect(bytes.readBigUInt64LE(bytes.length - 8).toString(16).padStart(16, '0')).toBe(checksum);

  const inspection = await native.inspectEngine(file);
  expect(inspection).toEqual({ checksum, headerJson: header, weights: TABLE });
  expect(leftovers('rank0.engine')).toEqual(['rank0.engine']);
});

test('a corrupt byte is a checksum error', async () => {
  const { bytes } = await writeGood('corrupt-src.engine');
  const bad = Buffer.from(bytes);
  bad[bad.length - 20] ^= 0x01;
  const file = path.join(dir, 'corrupt.engine');
  fs.writeFileSync(file, bad);
  await expect(native.inspectEngine(file)).rejects.toThrow(
    new RegExp(`^${escape(file)}: checksum mismatch: the trailer says [0-9a-f]{16} but the contents hash to [0-9a-f]{16}`),
  );
});

test('a wrong magic', async () => {
  const { bytes } = await writeGood('magic-src.engine');
  const bad = Buffer.from(bytes);
  bad.write('GGUF', 0, 'latin1');
  const file = path.join(dir, 'magic.engine');
  fs.writeFileSync(file, bad);
  await expect(native.inspectEngine(file)).rejects.toThrow(`${file}: not a Kiln engine (wrong magic`);
});

test('another format version names both versions', async () => {
  const { bytes } = await writeGood('version-src.engine');
  const bad = Buffer.from(bytes);
  bad.writeUInt32LE(2, 8);
  const file = withChecksum('version.engine', bad);
  await expect(native.inspectEngine(file)).rejects.toThrow(
    `${file}: engine format version 2 is not supported; this build reads version 1`,
  );
});

test('a header length past the end of the file', async () => {
  const { bytes } = await writeGood('hlen-src.engine');
  const bad = Buffer.from(bytes);
  bad.writeBigUInt64LE(1000000n, 16);
  const file = path.join(dir, 'hlen.engine');
  fs.writeFileSync(file, bad);
  await expect(native.inspectEngine(file)).rejects.toThrow(
    `${file}: header length 1000000 is past the end of the file (${bytes.length} bytes)`,
  );
  const tiny = path.join(dir, 'tiny.engine');
  fs.writeFileSync(tiny, bytes.subarray(0, 20));
  await expect(native.inspectEngine(tiny)).rejects.toThrow(`${tiny}: file is 20 bytes, too short for an engine`);
});

test('a weight outside the data region', async () => {
  const { bytes, header } = await writeGood('outside-src.engine');
  // Same length, so nothing else moves: "inv" now claims bytes [960, 972) of a 288-byte region.
  const moved = header.replace('"offset":192', '"offset":960');
  expect(moved.length).toBe(header.length);
  const bad = Buffer.from(bytes);
  bad.write(moved, 24, 'utf8');
  const file = withChecksum('outside.engine', bad);
  await expect(native.inspectEngine(file)).rejects.toThrow(
    `${file}: header.weights[2] "inv": bytes [960, 972) are outside the data region (288 bytes)`,
  );
});

test('other header faults the loader finds', async () => {
  const { bytes, header } = await writeGood('faults-src.engine');
  const patch = async (name: string, from: string, to: string) => {
    const changed = header.replace(from, to);
    expect(changed.length).toBe(header.length);
    const bad = Buffer.from(bytes);
    bad.write(changed, 24, 'utf8');
    const file = withChecksum(name, bad);
    return native.inspectEngine(file).then(
      () => 'resolved',
      (e: Error) => e.message.slice(file.length + 2),
    );
  };
  await expect(patch('json.engine', '"ops":[]', '"ops":[}')).resolves.toMatch(/^invalid header JSON: /);
  await expect(patch('dtype.engine', '"float32"', '"float64"')).resolves.toBe(
    'header.weights[1] "w.t": unknown weight dtype "float64"',
  );
  await expect(patch('align.engine', '"offset":192', '"offset":193')).resolves.toBe(
    'header.weights[2] "inv": offset 193 is not a multiple of 64',
  );
  await expect(patch('overlap.engine', '"offset":256', '"offset":128')).resolves.toBe(
    'weights "w.t" [64, 192) and "b.f16" [128, 160) overlap',
  );
  await expect(patch('length.engine', '"byteLength":12}', '"byteLength":16}')).resolves.toBe(
    'header.weights[2] "inv": byteLength 16 but float32 [3] needs 12 bytes',
  );
  await expect(patch('format.engine', '"kiln-engine"', '"kiln-enginf"')).resolves.toBe(
    'header.format is "kiln-enginf", not "kiln-engine"',
  );
});

describe('writeEngine refuses a header that does not match its weights, leaving no file', () => {
  const attempt = async (name: string, table: HeaderWeight[], specs: EngineWeightSpec[] = SPECS()) => {
    const file = path.join(dir, name);
    const message = await native.writeEngine({ path: file, header: engineHeader(table), weights: specs }).then(
      () => 'resolved',
      (e: Error) => e.message,
    );
    expect(leftovers(name)).toEqual([]);
    return message.startsWith(`${file}: `) ? message.slice(file.length + 2) : message;
  };
  const edit = (i: number, change: Partial<HeaderWeight>) => TABLE.map((w, j) => (j === i ? { ...w, ...change } : w));

  test('count, name, dtype, shape', async () => {
    expect(await attempt('w-count.engine', TABLE.slice(0, 3))).toBe('header.weights lists 3 weights but 4 were given');
    expect(await attempt('w-name.engine', edit(1, { name: 'w.u' }))).toBe('weight 1 "w.t": header.weights[1] is "w.u"');
    expect(await attempt('w-dtype.engine', edit(0, { dtype: 'float16' }))).toBe(
      'weight 0 "w.bf16": dtype bfloat16 but the header says float16',
    );
    expect(await attempt('w-shape.engine', edit(1, { shape: [4, 8] }))).toBe(
      'weight 1 "w.t": shape [8, 4] but the header says [4, 8]',
    );
  });

  test('offsets and lengths', async () => {
    expect(await attempt('w-align.engine', edit(2, { offset: 200 }))).toBe(
      'header.weights[2] "inv": offset 200 is not a multiple of 64',
    );
    expect(await attempt('w-len.engine', edit(2, { byteLength: 16 }))).toBe(
      'header.weights[2] "inv": byteLength 16 but float32 [3] needs 12 bytes',
    );
    expect(await attempt('w-overlap.engine', edit(3, { offset: 128 }))).toBe(
      'weights "w.t" [64, 192) and "b.f16" [128, 160) overlap',
    );
    const swapped = [TABLE[0], TABLE[1], { ...TABLE[2], offset: 320 }, TABLE[3]];
    expect(await attempt('w-order.engine', swapped)).toBe(
      'weight 3 "b.f16": offset 256 is before the end of the previous weight (332); weights must be in file order',
    );
  });

  test('element counts of sources and constants', async () => {
    const specs = SPECS();
    specs[3] = { name: 'b.f16', dtype: 'float16', shape: [2, 8], sources: [{ file: src, tensor: 'b' }] };
    expect(await attempt('w-elements.engine', TABLE, specs)).toBe(
      `tensor "b.f16": shape [2, 8] has 16 elements but its sources give 8 (8 from ${src} "b")`,
    );
    const constants = SPECS();
    constants[2] = { name: 'inv', dtype: 'float32', shape: [3], data: new Float32Array(4) };
    expect(await attempt('w-constant.engine', TABLE, constants)).toBe(
      'weight 2 "inv": shape [3] has 3 elements but data has 4',
    );
  });

  test('header JSON and identity', async () => {
    const file = path.join(dir, 'w-json.engine');
    await expect(native.writeEngine({ path: file, header: '{"format": ', weights: [] })).rejects.toThrow(
      `${file}: invalid header JSON: unexpected end of input at byte 11`,
    );
    await expect(
      native.writeEngine({ path: file, header: JSON.stringify({ format: 'kiln-engine', formatVersion: 2, weights: [] }), weights: [] }),
    ).rejects.toThrow(`${file}: header.formatVersion is 2, this build reads version 1`);
    await expect(
      native.writeEngine({ path: file, header: JSON.stringify({ format: 'kiln-engine', formatVersion: 1 }), weights: [] }),
    ).rejects.toThrow(`${file}: header: missing key "weights"`);
    expect(leftovers('w-json.engine')).toEqual([]);
  });

  test('bad arguments are TypeErrors naming the field', async () => {
    await expect(
      native.writeEngine({ path: 'x', header: '{}', weights: [{ name: 'a', dtype: 'float32', shape: [1], data: [1] as never }] }),
    ).rejects.toMatchObject({ name: 'TypeError', message: 'writeEngine: options.weights[0].data must be a Float32Array' });
    await expect(
      native.writeEngine({ path: 'x', header: '{}', weights: [{ name: 'a', dtype: 'float32', shape: [1] } as never] }),
    ).rejects.toMatchObject({ name: 'TypeError', message: 'writeEngine: options.weights[0] must have exactly one of `sources` and `data`' });
    await expect(native.writeEngine({ path: 'x', header: 5 as never, weights: [] })).rejects.toMatchObject({
      name: 'TypeError',
      message: 'writeEngine: options.header must be a string',
    });
    await expect(native.inspectEngine(undefined as never)).rejects.toMatchObject({
      name: 'TypeError',
      message: 'inspectEngine: path must be a string',
    });
  });
});

test('an engine with no weights still has a data region and a trailer', async () => {
  const file = path.join(dir, 'empty.engine');
  const header = engineHeader([]);
  const result = await native.writeEngine({ path: file, header, weights: [] });
  const h = Buffer.byteLength(header);
  expect(result.fileSize).toBe(Math.ceil((24 + h) / 64) * 64 + 8);
  expect((await native.inspectEngine(file)).weights).toEqual([]);
});

test('cpuInfo', () => {
  const info = native.cpuInfo();
  expect(['avx2', 'generic']).toContain(info.isa);
  expect(Number.isInteger(info.hardwareConcurrency) && info.hardwareConcurrency >= 1).toBe(true);
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

describe('int4 weights (decision 0014)', () => {
  // A [3, 64] float32 source: two groups of 32 per row, one row with a negative extreme and one of zeros.
  const N = 3;
  const K = 64;
  let qsrc: string;
  const values = Array.from({ length: N * K }, (_, i) => (i < 2 * K ? Math.sin(i * 1.7) * (i === 40 ? 3 : 1) : 0));
  beforeAll(() => {
    const header = JSON.stringify({ q: { dtype: 'F32', shape: [N, K], data_offsets: [0, 4 * N * K] } });
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(Buffer.byteLength(header)));
    qsrc = path.join(dir, 'int4.safetensors');
    fs.writeFileSync(qsrc, Buffer.concat([len, Buffer.from(header), f32(values)]));
  });
  const bytesFor = (G: number) => (N * K) / 2 + 2 * N * (K / G);
  const table = (G: number, extra: Record<string, unknown> = {}) => [
    { name: 'q', dtype: 'int4', shape: [N, K], groupSize: G, offset: 0, byteLength: bytesFor(G), ...extra },
  ];
  const specs = (G: number): EngineWeightSpec[] => [{ name: 'q', dtype: 'int4', shape: [N, K], groupSize: G, sources: [{ file: qsrc, tensor: 'q' }] }];

  test('codes two a byte in 32-element blocks, then bfloat16 scales; the report matches the bytes', async () => {
    for (const G of [32, 64]) {
      const file = path.join(dir, `int4-g${G}.engine`);
      const header = engineHeader(table(G) as unknown as HeaderWeight[]);
      const result = await native.writeEngine({ path: file, header, weights: specs(G) });
      const bytes = fs.readFileSync(file);
      const dataStart = Math.ceil((24 + Buffer.byteLength(header)) / 64) * 64;
      const codes = bytes.subarray(dataStart, dataStart + (N * K) / 2);
      const scaleAt = (i: number) => {
        const bits = bytes.readUInt16LE(dataStart + (N * K) / 2 + 2 * i);
        return new Float32Array(new Uint32Array([bits << 16]).buffer)[0];
      };
      // Decode by the documented layout: byte j of a block holds element j (low nibble) and j + 16 (high).
      let errSq = 0;
      let refSq = 0;
      let maxRel = 0;
      for (let n = 0; n < N; n++) {
        const rowMax = Math.max(...values.slice(n * K, (n + 1) * K).map(Math.abs));
        for (let k = 0; k < K; k++) {
          const block = Math.floor(k / 32);
          const j = k % 32;
          const byte = codes[(n * K) / 2 + block * 16 + (j % 16)];
          const code = (j < 16 ? byte & 15 : byte >> 4) - 8;
          const w = code * scaleAt(n * (K / G) + Math.floor(k / G));
          const err = w - values[n * K + k];
          errSq += err * err;
          refSq += values[n * K + k] ** 2;
          if (rowMax > 0) maxRel = Math.max(maxRel, Math.abs(err) / rowMax);
        }
      }
      // Row 2 is zeros: zero scales and code 8 (q = 0), decoded exactly.
      expect(codes.subarray(K, (3 * K) / 2).every((b) => b === 0x88)).toBe(true);
      expect(result.quantization).toHaveLength(1);
      expect(result.quantization[0].name).toBe('q');
      expect(result.quantization[0].rmsRelativeError).toBeCloseTo(Math.sqrt(errSq / refSq), 6);
      expect(result.quantization[0].maxRelativeError).toBeCloseTo(maxRel, 6);
      expect(Math.sqrt(errSq / refSq)).toBeLessThan(0.12);
      expect(maxRel).toBeLessThan(0.2);
      expect(bytes.length).toBe(dataStart + bytesFor(G) + 8); // the weight, then the trailer
      const inspection = await native.inspectEngine(file);
      expect(inspection.weights[0]).toMatchObject({ name: 'q', dtype: 'int4', shape: [N, K], byteLength: bytesFor(G) });
    }
  });

  test('the group size is checked: required, a multiple of 32 dividing K, int4 only, the same in header and spec', async () => {
    const attempt = async (name: string, t: unknown[], s: EngineWeightSpec[] = specs(32)) => {
      const file = path.join(dir, name);
      const message = await native.writeEngine({ path: file, header: engineHeader(t as HeaderWeight[]), weights: s }).then(
        () => 'resolved',
        (e: Error) => e.message,
      );
      expect(leftovers(name)).toEqual([]);
      return message.startsWith(`${file}: `) ? message.slice(file.length + 2) : message;
    };
    expect(await attempt('g-missing.engine', [{ ...table(32)[0], groupSize: undefined }])).toMatch(/header\.weights\[0\] "q".*groupSize/);
    expect(await attempt('g-48.engine', table(48, { byteLength: 0 }))).toBe('header.weights[0] "q": groupSize 48 is not a multiple of 32');
    expect(await attempt('g-128.engine', table(128, { byteLength: 0 }))).toBe('header.weights[0] "q": K = 64 is not a multiple of groupSize 128');
    expect(await attempt('g-len.engine', table(32, { byteLength: 100 }))).toBe(
      'header.weights[0] "q": byteLength 100 but int4 [3, 64] needs 108 bytes',
    );
    expect(await attempt('g-spec.engine', table(32), specs(64))).toBe('weight 0 "q": groupSize 64 but the header says 32');
    const f32Table = [{ name: 'q', dtype: 'float32', shape: [N, K], groupSize: 32, offset: 0, byteLength: 4 * N * K }];
    expect(await attempt('g-f32.engine', f32Table, [{ name: 'q', dtype: 'float32', shape: [N, K], sources: [{ file: qsrc, tensor: 'q' }] }])).toBe(
      'header.weights[0] "q": groupSize is for int4 weights only',
    );
    await expect(
      native.writeEngine({ path: path.join(dir, 'g-arg.engine'), header: engineHeader(table(32) as unknown as HeaderWeight[]), weights: [{ ...specs(32)[0], groupSize: undefined }] }),
    ).rejects.toThrow(/options\.weights\[0\]\.groupSize is required for int4 weights/);
  });
});

describe('float8_e4m3fn weights (decision 0015)', () => {
  // A [3, 64] float32 source: one row up to ~3, one of small values, one of zeros.
  const N = 3;
  const K = 64;
  let src: string;
  const values = Array.from({ length: N * K }, (_, i) => (i < K ? Math.sin(i * 1.7) * (i === 40 ? 3 : 1) : i < 2 * K ? Math.cos(i) * 1e-3 : 0));
  beforeAll(() => {
    const header = JSON.stringify({ w: { dtype: 'F32', shape: [N, K], data_offsets: [0, 4 * N * K] } });
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(Buffer.byteLength(header)));
    src = path.join(dir, 'fp8.safetensors');
    fs.writeFileSync(src, Buffer.concat([len, Buffer.from(header), f32(values)]));
  });
  const table = (extra: Record<string, unknown> = {}) => [{ name: 'w', dtype: 'float8_e4m3fn', shape: [N, K], offset: 0, byteLength: N * K + 4, ...extra }];
  const specs = (): EngineWeightSpec[] => [{ name: 'w', dtype: 'float8_e4m3fn', shape: [N, K], sources: [{ file: src, tensor: 'w' }] }];
  // e4m3 (bias 7, 3 mantissa bits, 0x7f / 0xff NaN), decoded from its definition.
  const e4m3 = (c: number) => {
    const e = (c >> 3) & 15;
    const m = c & 7;
    const v = (c & 0x7f) === 0x7f ? NaN : e === 0 ? (m / 8) * 2 ** -6 : (1 + m / 8) * 2 ** (e - 7);
    return c & 0x80 ? -v : v;
  };

  test('codes row-major, then one float32 scale (max |w| / 448); the report matches the bytes', async () => {
    const file = path.join(dir, 'fp8.engine');
    const header = engineHeader(table() as unknown as HeaderWeight[]);
    const result = await native.writeEngine({ path: file, header, weights: specs() });
    const bytes = fs.readFileSync(file);
    const dataStart = Math.ceil((24 + Buffer.byteLength(header)) / 64) * 64;
    const scale = bytes.readFloatLE(dataStart + N * K);
    const magnitudes = values.map((v) => Math.abs(Math.fround(v)));
    const amax = Math.max(...magnitudes);
    expect(scale).toBe(Math.fround(amax / 448));
    let errSq = 0;
    let refSq = 0;
    let maxRel = 0;
    for (let i = 0; i < N * K; i++) {
      const code = bytes[dataStart + i];
      expect((code & 0x7f) === 0x7f).toBe(false);
      const err = e4m3(code) * scale - values[i];
      errSq += err * err;
      refSq += values[i] ** 2;
      maxRel = Math.max(maxRel, Math.abs(err) / amax);
    }
    expect(bytes[dataStart + magnitudes.indexOf(amax)] & 0x7f).toBe(0x7e); // the largest magnitude codes +-448
    expect(bytes.subarray(dataStart + 2 * K, dataStart + 3 * K).every((b) => b === 0)).toBe(true);
    expect(result.quantization).toHaveLength(1);
    expect(result.quantization[0].name).toBe('w');
    expect(result.quantization[0].rmsRelativeError).toBeCloseTo(Math.sqrt(errSq / refSq), 6);
    expect(result.quantization[0].maxRelativeError).toBeCloseTo(maxRel, 6);
    expect(maxRel).toBeLessThanOrEqual(16 / 448 + 1e-6); // half a step of the top binade
    expect(Math.sqrt(errSq / refSq)).toBeLessThan(0.06);
    expect(bytes.length).toBe(dataStart + N * K + 4 + 8); // the weight, then the trailer
    const inspection = await native.inspectEngine(file);
    expect(inspection.weights[0]).toMatchObject({ name: 'w', dtype: 'float8_e4m3fn', shape: [N, K], byteLength: N * K + 4 });
  });

  test('the layout is checked: 2-D, N * K + 4 bytes', async () => {
    const attempt = async (name: string, t: unknown[], s: EngineWeightSpec[]) => {
      const file = path.join(dir, name);
      const message = await native.writeEngine({ path: file, header: engineHeader(t as HeaderWeight[]), weights: s }).then(
        () => 'resolved',
        (e: Error) => e.message,
      );
      expect(leftovers(name)).toEqual([]);
      return message.startsWith(`${file}: `) ? message.slice(file.length + 2) : message;
    };
    expect(await attempt('fp8-len.engine', table({ byteLength: N * K }), specs())).toBe(
      `header.weights[0] "w": byteLength ${N * K} but float8_e4m3fn [3, 64] needs ${N * K + 4} bytes`,
    );
    const flat = [{ name: 'w', dtype: 'float8_e4m3fn', shape: [N * K], offset: 0, byteLength: N * K + 4 }];
    expect(await attempt('fp8-1d.engine', flat, [{ name: 'w', dtype: 'float8_e4m3fn', shape: [N * K], sources: [{ file: src, tensor: 'w' }] }])).toBe(
      'header.weights[0] "w": float8_e4m3fn weights must be 2-D [N, K]',
    );
  });
});

describe('q8_0 weights (decision 0016)', () => {
  // A [2, 64] float32 source: row 0 the values of two Q8_0 blocks (d * q, q up to 127), row 1 those of a
  // Q4_0 block (d * (q - 8), q - 8 = -8 at its largest magnitude) then arbitrary floats.
  const N = 2;
  const K = 64;
  let qsrc: string;
  const d0 = 0.015625;
  const d1 = -0.0625;
  const values = [
    ...Array.from({ length: 64 }, (_, i) => d0 * (i === 3 ? 127 : i === 40 ? -127 : ((i * 37) % 255) - 127)),
    ...Array.from({ length: 32 }, (_, i) => d1 * (i === 5 ? -8 : (i % 16) - 8)),
    ...Array.from({ length: 32 }, (_, i) => Math.sin(i * 1.3)),
  ];
  beforeAll(() => {
    const header = JSON.stringify({ q: { dtype: 'F32', shape: [N, K], data_offsets: [0, 4 * N * K] } });
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(Buffer.byteLength(header)));
    qsrc = path.join(dir, 'q8_0.safetensors');
    fs.writeFileSync(qsrc, Buffer.concat([len, Buffer.from(header), f32(values)]));
  });
  const BYTES = (N * K) / 32 * 34;
  const table = (extra: Record<string, unknown> = {}) => [{ name: 'q', dtype: 'q8_0', shape: [N, K], offset: 0, byteLength: BYTES, ...extra }];
  const specs = (): EngineWeightSpec[] => [{ name: 'q', dtype: 'q8_0', shape: [N, K], sources: [{ file: qsrc, tensor: 'q' }] }];

  test('Q8_0 and Q4_0 values are kept exactly in 34-byte blocks; others get ggml reference Q8_0', async () => {
    const file = path.join(dir, 'q8_0.engine');
    const header = engineHeader(table() as unknown as HeaderWeight[]);
    const result = await native.writeEngine({ path: file, header, weights: specs() });
    const bytes = fs.readFileSync(file);
    const dataStart = Math.ceil((24 + Buffer.byteLength(header)) / 64) * 64;
    const block = (b: number) => bytes.subarray(dataStart + 34 * b, dataStart + 34 * (b + 1));
    const half = (h: number) => {
      const e = (h >> 10) & 31;
      const m = h & 1023;
      return (h & 0x8000 ? -1 : 1) * (e === 0 ? m * 2 ** -24 : (1 + m / 1024) * 2 ** (e - 15));
    };
    const decoded = (b: number) => Array.from({ length: 32 }, (_, j) => half(block(b).readUInt16LE(0)) * block(b).readInt8(2 + j));
    expect(decoded(0)).toEqual(values.slice(0, 32));
    expect(decoded(1)).toEqual(values.slice(32, 64));
    // The Q4_0 block keeps its d (negative) and its codes q - 8 in [-8, 7].
    expect(half(block(2).readUInt16LE(0))).toBe(d1);
    expect(decoded(2)).toEqual(values.slice(64, 96));
    const lossy = decoded(3);
    expect(lossy).not.toEqual(values.slice(96, 128));
    lossy.forEach((v, j) => expect(Math.abs(v - values[96 + j])).toBeLessThanOrEqual(0.5 * (1 / 127) + 1e-3));
    expect(result.quantization).toEqual([expect.objectContaining({ name: 'q', losslessBlocks: 3, blocks: 4 })]);
    expect(bytes.length).toBe(dataStart + BYTES + 8);
  });

  test('the shape is checked: [N, K] with K a multiple of 32, and the byte length', async () => {
    const attempt = async (name: string, t: unknown[]) => {
      const file = path.join(dir, name);
      const message = await native.writeEngine({ path: file, header: engineHeader(t as HeaderWeight[]), weights: specs() }).then(
        () => 'resolved',
        (e: Error) => e.message,
      );
      expect(leftovers(name)).toEqual([]);
      return message.startsWith(`${file}: `) ? message.slice(file.length + 2) : message;
    };
    expect(await attempt('q8-k.engine', table({ shape: [4, 32 + 16], byteLength: 0 }))).toBe(
      'header.weights[0] "q": q8_0 weights must be 2-D [N, K] with K a multiple of 32, not [4, 48]',
    );
    expect(await attempt('q8-len.engine', table({ byteLength: 128 }))).toBe('header.weights[0] "q": byteLength 128 but q8_0 [2, 64] needs 136 bytes');
  });
});
