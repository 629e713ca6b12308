// Issue 16: an engine whose ops were reordered (checksum recomputed) ran and produced garbage, and an
// edited config.json was ignored where it disagreed with the engine file. Every adjacent swap of two ops
// of a real engine is either refused at load, naming the op, or runs to exactly the original tokens;
// config.json edits are refused naming the key, with nothing left loaded.
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildEngine } from '@kiln/builder';
import { convertCheckpoint } from '@kiln/convert';
import { Engine } from '@kiln/runtime';

const FIXTURE = path.resolve(__dirname, '../../../fixtures/hf-tiny/llama');

// ---- XXH64 (seed 0) from the spec, on BigInts: the engine file's checksum, recomputed independently ----
const MASK = (1n << 64n) - 1n;
const P1 = 11400714785074694791n;
const P2 = 14029467366897019727n;
const P3 = 1609587929392839161n;
const P4 = 9650029242287828579n;
const P5 = 2870177450012600261n;
const rotl = (x: bigint, r: number) => ((x << BigInt(r)) | (x >> BigInt(64 - r))) & MASK;
const mul = (a: bigint, b: bigint) => (a * b) & MASK;
const add = (a: bigint, b: bigint) => (a + b) & MASK;
const round = (acc: bigint, lane: bigint) => mul(rotl(add(acc, mul(lane, P2)), 31), P1);
function xxh64(data: Buffer): bigint {
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
  return acc;
}

let root: string;
let engineDir: string;
let engineBytes: Buffer;
let reference: number[];
const PROMPT = [1, 17, 42, 99, 7];

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-engine-checks-'));
  await convertCheckpoint({ modelDir: FIXTURE, outputDir: path.join(root, 'checkpoint') });
  engineDir = path.join(root, 'engine');
  await buildEngine({ checkpointDir: path.join(root, 'checkpoint'), outputDir: engineDir, config: { maxBatchSize: 4 } });
  engineBytes = await fs.readFile(path.join(engineDir, 'rank0.engine'));
  reference = await run(engineDir);
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

async function run(dir: string): Promise<number[]> {
  const engine = await Engine.load(dir);
  try {
    return (await engine.generate(PROMPT, { maxTokens: 8, ignoreEos: true })).outputIds;
  } finally {
    engine.dispose();
  }
}

let counter = 0;
/** A copy of the engine directory whose header went through `edit` (same length), checksum recomputed. */
async function variant(edit: (header: { ops: unknown[] }) => void): Promise<string> {
  const headerLength = Number(engineBytes.readBigUInt64LE(16));
  const header = JSON.parse(engineBytes.subarray(24, 24 + headerLength).toString('utf8'));
  edit(header);
  const text = Buffer.from(JSON.stringify(header), 'utf8');
  expect(text.length).toBe(headerLength);
  const bytes = Buffer.from(engineBytes);
  text.copy(bytes, 24);
  bytes.writeBigUInt64LE(xxh64(bytes.subarray(0, bytes.length - 8)), bytes.length - 8);
  const dir = path.join(root, `variant-${counter++}`);
  await fs.mkdir(dir);
  await fs.copyFile(path.join(engineDir, 'config.json'), path.join(dir, 'config.json'));
  await fs.writeFile(path.join(dir, 'rank0.engine'), bytes);
  return dir;
}

test('every adjacent swap of two ops is refused at load or gives the original tokens', async () => {
  const headerLength = Number(engineBytes.readBigUInt64LE(16));
  const ops = JSON.parse(engineBytes.subarray(24, 24 + headerLength).toString('utf8')).ops as unknown[];
  expect(ops.length).toBeGreaterThan(10);
  let refused = 0;
  let accepted = 0;
  for (let i = 0; i + 1 < ops.length; i++) {
    const dir = await variant((h) => ([h.ops[i], h.ops[i + 1]] = [h.ops[i + 1], h.ops[i]]));
    let outputs: number[] | undefined;
    try {
      outputs = await run(dir);
    } catch (error) {
      expect((error as Error).message).toMatch(/header\.ops\[\d+\] \(\w+\) (reads|writes) value \d+/);
      expect((error as Error).message).toMatch(/not in dependency order|not in an order their memory plan allows|over the bytes of its own input/);
      refused++;
    }
    if (outputs !== undefined) {
      expect({ swap: i, outputs }).toEqual({ swap: i, outputs: reference });
      accepted++;
    }
    await fs.rm(dir, { recursive: true });
  }
  expect(refused).toBeGreaterThan(0);
  // Independent neighbours (q, k and v projections, say) may swap: those are accepted.
  process.stderr.write(`adjacent swaps: ${refused} refused, ${accepted} accepted with the original output\n`);
});

test('an op moved before the producer of its input is refused naming it', async () => {
  const dir = await variant((h) => {
    const last = h.ops.pop();
    h.ops.unshift(last);
  });
  await expect(Engine.load(dir)).rejects.toThrow(/header\.ops\[0\] \(\w+\) reads value \d+ .*which no earlier op wrote: the ops are not in dependency order/);
});

describe('config.json must agree with the engine file', () => {
  async function edited(edit: (config: Record<string, any>) => void): Promise<string> {
    const dir = path.join(root, `config-${counter++}`);
    await fs.cp(engineDir, dir, { recursive: true });
    const file = path.join(dir, 'config.json');
    const config = JSON.parse(await fs.readFile(file, 'utf8'));
    edit(config);
    await fs.writeFile(file, JSON.stringify(config, null, 2));
    return dir;
  }

  test.each([
    ['buildConfig.maxBatchSize', (c: Record<string, any>) => (c.buildConfig.maxBatchSize = 64), /"buildConfig\.maxBatchSize" is 64 but .*rank0\.engine says 4/],
    ['buildConfig.maxSeqLen', (c: Record<string, any>) => (c.buildConfig.maxSeqLen += 1), /"buildConfig\.maxSeqLen"/],
    ['buildConfig.gatherContextLogits', (c: Record<string, any>) => (c.buildConfig.gatherContextLogits = true), /"buildConfig\.gatherContextLogits" is true/],
    ['checkpoint.model.vocabSize', (c: Record<string, any>) => (c.checkpoint.model.vocabSize = 1024), /"checkpoint\.model\.vocabSize" is 1024 but .* says 512/],
    ['checkpoint.model.rmsNormEps', (c: Record<string, any>) => (c.checkpoint.model.rmsNormEps = 0.5), /"checkpoint\.model\.rmsNormEps" is 0\.5/],
    ['target.backend', (c: Record<string, any>) => (c.target.backend = 'cuda'), /"target\.backend" is "cuda" but .* says "cpu"/],
  ])('an edited %s is refused, naming the key', async (_key, edit, message) => {
    const dir = await edited(edit);
    await expect(Engine.load(dir)).rejects.toThrow(message);
  });

  test('the unedited directory loads', async () => {
    expect(await run(engineDir)).toEqual(reference);
  });
});
