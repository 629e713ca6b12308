// Issue 16, conversion: NaN/Inf weights refused (naming the tensor) unless allowed, config values and
// tokenizer.json checked at conversion, a safetensors file whose data region is unaligned converted
// correctly (the misaligned float load UBSan reported), headers with millions of entries refused with
// memory proportional to the file, and stale temporary folders of dead processes removed.
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { convertCheckpoint, createTempDirBeside, readKilnCheckpoint, removeStaleTempDirs } from '@kiln/convert';
import { readRaw, readTensors, writeTensors, type Tensor } from './safetensors-files';

const REPO = path.resolve(__dirname, '../../..');
const FIXTURES = path.join(REPO, 'fixtures/hf-tiny');
let root: string;
let counter = 0;

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-convert-hardening-'));
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

async function copyFixture(name: string): Promise<string> {
  const dir = path.join(root, `${name}-${counter++}`);
  await fs.mkdir(dir);
  for (const file of await fs.readdir(path.join(FIXTURES, name))) {
    if (file.startsWith('reference')) continue;
    await fs.copyFile(path.join(FIXTURES, name, file), path.join(dir, file));
  }
  return dir;
}

const outputPath = () => path.join(root, `out-${counter++}`, 'checkpoint');
const exists = (file: string) => fs.stat(file).then(() => true, () => false);

async function expectNothingLeft(outputDir: string): Promise<void> {
  expect(await exists(outputDir)).toBe(false);
  const parent = path.dirname(outputDir);
  const siblings = (await exists(parent)) ? await fs.readdir(parent) : [];
  expect(siblings.filter((name) => name.startsWith(`${path.basename(outputDir)}.`))).toEqual([]);
}

async function expectFailure(modelDir: string, patterns: (string | RegExp)[]): Promise<void> {
  const outputDir = outputPath();
  let caught: unknown;
  try {
    await convertCheckpoint({ modelDir, outputDir });
  } catch (error) {
    caught = error;
  }
  const message = (caught as Error | undefined)?.message;
  expect(typeof message).toBe('string');
  for (const pattern of patterns) expect(message).toMatch(pattern);
  await expectNothingLeft(outputDir);
}

async function editConfig(dir: string, edit: (config: Record<string, unknown>) => void, file = 'config.json'): Promise<void> {
  const config = JSON.parse(await fs.readFile(path.join(dir, file), 'utf8'));
  edit(config);
  await fs.writeFile(path.join(dir, file), JSON.stringify(config, null, 2));
}

async function editTensors(dir: string, edit: (tensors: Map<string, Tensor>) => void): Promise<void> {
  const file = path.join(dir, 'model.safetensors');
  const tensors = await readTensors(file);
  edit(tensors);
  await writeTensors(file, tensors, { format: 'pt' });
}

describe('non-finite weights', () => {
  test('NaN in a float32 weight is refused, naming the tensor and the element; allowNonFinite converts it', async () => {
    const dir = await copyFixture('llama');
    await editTensors(dir, (tensors) => {
      const t = tensors.get('model.layers.1.mlp.down_proj.weight') as Tensor;
      t.data.writeFloatLE(Number.NaN, 4 * 37);
    });
    await expectFailure(dir, [/model\.layers\.1\.mlp\.down_proj\.weight/, /NaN \(element 37\)/, /--allow-non-finite/]);
    const outputDir = outputPath();
    await convertCheckpoint({ modelDir: dir, outputDir, allowNonFinite: true });
    expect((await readKilnCheckpoint(outputDir)).config.architecture).toBe('LlamaForCausalLM');
  });

  test('Infinity in a bfloat16 weight converted to float32 is refused too', async () => {
    const dir = await copyFixture('llama_bf16');
    await editTensors(dir, (tensors) => {
      const t = tensors.get('model.embed_tokens.weight') as Tensor;
      t.data.writeUInt16LE(0x7f80, 2 * 5);  // bfloat16 +Infinity
    });
    const outputDir = outputPath();
    await expect(convertCheckpoint({ modelDir: dir, outputDir, dtype: 'float32' })).rejects.toThrow(/model\.embed_tokens\.weight.*Infinity \(element 5\)/);
    await expectNothingLeft(outputDir);
  });
});

describe('config values and tokenizer.json are checked at conversion', () => {
  test('rms_norm_eps must be positive', async () => {
    const dir = await copyFixture('llama');
    await editConfig(dir, (c) => (c.rms_norm_eps = -1));
    await expectFailure(dir, [/config\.json/, /rms_norm_eps/, /expected a positive number, got -1/]);
  });

  test('an unknown dtype name is refused, naming the key and value', async () => {
    for (const [key, value] of [['dtype', 'int4'], ['torch_dtype', 'float8_e4m3fn'], ['dtype', 7]] as const) {
      const dir = await copyFixture('llama');
      await editConfig(dir, (c) => {
        delete c.dtype;
        c[key] = value;
      });
      await expectFailure(dir, [/config\.json/, new RegExp(key), new RegExp(String(value)), /cannot convert/]);
    }
    const auto = await copyFixture('llama');
    await editConfig(auto, (c) => (c.dtype = 'auto'));
    const out = outputPath();
    await convertCheckpoint({ modelDir: auto, outputDir: out });
    expect((await readKilnCheckpoint(out)).config.dtype).toBe('float32');
  });

  test('a tokenizer.json that cannot run, or gives ids outside the vocabulary, is refused', async () => {
    const broken = await copyFixture('llama');
    await fs.writeFile(path.join(broken, 'tokenizer.json'), JSON.stringify({ version: '1.0', model: { type: 'BPE', vocab: 'nope', merges: 3 } }));
    await expectFailure(broken, [/tokenizer\.json/, /cannot build or run the tokenizer/]);
    const notJson = await copyFixture('llama');
    await fs.writeFile(path.join(notJson, 'tokenizer.json'), '{"model": ');
    await expectFailure(notJson, [/tokenizer\.json/, /invalid JSON/]);
    const outside = await copyFixture('llama');
    await editConfig(outside, (c) => (c.vocab_size = 8));
    await expectFailure(outside, [/tokenizer\.json/, /outside the model's vocabulary \(vocab_size 8/]);
  });
});

test('a safetensors file whose data region starts unaligned converts to the same values', async () => {
  const dir = await copyFixture('llama');
  const file = path.join(dir, 'model.safetensors');
  const raw = await readRaw(file);
  // Header padded to 8k + 3 bytes: every float of the data region is at an address = 3 (mod 4).
  const json = JSON.stringify({ __metadata__: raw.metadata ?? { format: 'pt' }, ...raw.header });
  const padded = json + ' '.repeat(((3 - ((8 + Buffer.byteLength(json)) % 8)) + 8) % 8);
  expect((8 + Buffer.byteLength(padded)) % 4).toBe(3);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(padded)));
  await fs.writeFile(file, Buffer.concat([length, Buffer.from(padded), raw.data]));
  // bfloat16 output: every value goes through the float32 load (no byte copy). The result must be
  // byte for byte the conversion of the untouched fixture.
  const outputDir = outputPath();
  await convertCheckpoint({ modelDir: dir, outputDir, dtype: 'bfloat16' });
  const referenceDir = outputPath();
  await convertCheckpoint({ modelDir: await copyFixture('llama'), outputDir: referenceDir, dtype: 'bfloat16' });
  const written = await fs.readFile(path.join(outputDir, 'rank0.safetensors'));
  expect(written.equals(await fs.readFile(path.join(referenceDir, 'rank0.safetensors')))).toBe(true);
});

describe('headers with millions of entries', () => {
  /** Reads `file` with the native reader in a child process; its error and peak resident memory. */
  function readInChild(file: string): Promise<{ error?: string; maxRssBytes: number; ms: number }> {
    const binary = process.env.KILN_NATIVE_BINARY ?? path.join(REPO, 'native/build/Release/kiln.node');
    const script = `
      const addon = require(${JSON.stringify(binary)});
      const started = Date.now();
      addon.readSafetensors(${JSON.stringify(file)}).then(
        () => ({}), (e) => ({ error: e.message }),
      ).then((out) => {
        out.ms = Date.now() - started;
        // VmHWM: the peak of this process image (getrusage's maxRSS would include the forked parent's).
        const hwm = /VmHWM:\\s+(\\d+) kB/.exec(require('fs').readFileSync('/proc/self/status', 'utf8'));
        out.maxRssBytes = hwm ? Number(hwm[1]) * 1024 : process.resourceUsage().maxRSS * 1024;
        process.stdout.write(JSON.stringify(out));
      });`;
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (err += d));
      child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`child exited ${code}: ${err}`))));
    });
  }

  async function writeHeader(file: string, json: string): Promise<void> {
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
    await fs.writeFile(file, Buffer.concat([length, Buffer.from(json)]));
  }

  test('4.19M __metadata__ entries (a 57 MB header) are refused in well under 200 MB', async () => {
    const file = path.join(root, 'metadata-bomb.safetensors');
    const entries: string[] = [];
    for (let i = 0; i < 4_190_000; i++) entries.push(`"k${i}":"v"`);
    await writeHeader(file, `{"__metadata__":{${entries.join(',')}}}`);
    expect((await fs.stat(file)).size).toBeGreaterThan(50e6);
    const result = await readInChild(file);
    process.stderr.write(`4.19M metadata entries: ${JSON.stringify(result)}\n`);
    expect(result.error).toMatch(/more than 65537 members|__metadata__ has/);
    expect(result.error).toContain(file);
    expect(result.maxRssBytes).toBeLessThan(200 * 1024 * 1024);
    await fs.rm(file);
  });

  test('590k empty tensors are refused naming the limit, in well under 200 MB', async () => {
    const file = path.join(root, 'tensor-bomb.safetensors');
    const entries: string[] = [];
    for (let i = 0; i < 590_000; i++) entries.push(`"t${i}":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}`);
    await writeHeader(file, `{${entries.join(',')}}`);
    const result = await readInChild(file);
    expect(result.error).toMatch(/more than 65537 members|tensors, more than the 65536/);
    expect(result.maxRssBytes).toBeLessThan(200 * 1024 * 1024);
    await fs.rm(file);
  });
});

describe('temporary folders of dead processes', () => {
  test('are removed by the next run; those of live processes are kept', async () => {
    const target = path.join(root, `stale-${counter++}`, 'checkpoint');
    await fs.mkdir(path.dirname(target), { recursive: true });
    // A pid that surely is not running: a child that has exited.
    const dead = await new Promise<number>((resolve) => {
      const child = spawn(process.execPath, ['-e', '0']);
      child.on('exit', () => resolve(child.pid as number));
    });
    const staleTmp = `${target}.tmp-${dead}-0123abcd`;
    const staleOld = `${target}.old-${dead}-89abcdef`;
    const live = `${target}.tmp-${process.ppid}-00000000`;  // the test runner's parent: alive
    const unrelated = `${target}.tmp-notapid`;
    for (const dir of [staleTmp, staleOld, live, unrelated]) await fs.mkdir(dir);
    await fs.writeFile(path.join(staleTmp, 'rank0.safetensors'), Buffer.alloc(1024));
    expect((await removeStaleTempDirs(target)).sort()).toEqual([staleOld, staleTmp].sort());
    expect(await exists(live)).toBe(true);
    expect(await exists(unrelated)).toBe(true);
    // createTempDirBeside does the same before making its own.
    await fs.mkdir(staleTmp);
    const temp = await createTempDirBeside(target);
    expect(await exists(staleTmp)).toBe(false);
    expect(path.basename(temp.dir)).toMatch(new RegExp(`^checkpoint\\.tmp-${process.pid}-[0-9a-f]{8}$`));
    temp.release();
    await fs.rm(temp.dir, { recursive: true });
  });
});
