// End to end with the built `kiln` (packages/cli/dist): a cuda engine is built anywhere (no GPU needed),
// and loading it where this build of @kiln/native has no CUDA backend (or sees no device) fails with a
// message about cuda, a non-zero exit and nothing written. On a machine that can run it, it runs. Then
// the KV cache flags and the --verbose start-up line on a cpu engine.
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { defaultComputeCapability } from '@kiln/builder';
import { loadNative } from '@kiln/native';

const REPO = path.resolve(__dirname, '../../..');
const FIXTURE = path.join(REPO, 'fixtures/hf-tiny/llama');
const BIN = path.join(REPO, 'packages/cli/dist/bin/kiln.js');

const cuda = loadNative().cudaInfo();
const runsCuda = cuda.compiled && cuda.devices.length > 0;

let root: string;
let env: NodeJS.ProcessEnv;
let checkpoint: string;

function kiln(...args: string[]): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [BIN, ...args], { env, encoding: 'utf8', timeout: 120_000 });
}

/** Every file under `dir`, relative, sorted: to show that a failed command wrote nothing. */
function listFiles(dir: string): string[] {
  return (fs.readdirSync(dir, { recursive: true }) as string[]).sort();
}

beforeAll(() => {
  if (!fs.existsSync(BIN)) throw new Error(`${BIN} is missing: build with \`npm run build:ts\` first`);
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-cuda-target-'));
  env = { ...process.env, KILN_CACHE_DIR: path.join(root, 'cache') };
  checkpoint = path.join(root, 'checkpoint');
  const convert = kiln('convert', '--model', FIXTURE, '--output', checkpoint);
  expect(convert.stderr).toBe('');
  expect(convert.status).toBe(0);
});
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

describe('kiln build --target cuda', () => {
  let engine: string;
  beforeAll(() => {
    engine = path.join(root, 'engine-cuda');
    const build = kiln('build', '--checkpoint', checkpoint, '--output', engine, '--target', 'cuda', '--dtype', 'float32', '--max-batch-size', '2', '--max-seq-len', '64');
    expect(build.stderr).toBe('');
    expect(build.status).toBe(0);
    expect(build.stdout).toMatch(/^Built engine .*cuda \(compute capability \d+\.\d+, float32\)\) in [0-9.]+ s\n$/);
  });

  it("records the cuda target in the engine's config.json", () => {
    const config = JSON.parse(fs.readFileSync(path.join(engine, 'config.json'), 'utf8'));
    const target = { backend: 'cuda', computeCapability: defaultComputeCapability(), activationDType: 'float32' };
    expect(config.target).toEqual(target);
    expect(config.buildConfig).toMatchObject({ target: 'cuda', dtype: 'float32', computeCapability: target.computeCapability });
    expect(config.buildConfig).not.toHaveProperty('isa');
  });

  // One test for both kinds of machine (the suite never skips): CI has no GPU; the GPU machine runs test/cuda.
  it('kiln generate runs it where a device is visible, and elsewhere refuses it: non-zero exit, "cuda" in the message, nothing written', () => {
    if (runsCuda) {
      const result = kiln('generate', '--engine', engine, '--input-ids', '1,2,3', '--max-tokens', '2', '--json', '--ignore-eos');
      expect(result.stderr).toBe('');
      expect(result.status).toBe(0);
      expect(JSON.parse(result.stdout).outputIds).toHaveLength(2);
      return;
    }
    const before = listFiles(root);
    const logits = path.join(root, 'logits.safetensors');
    const result = kiln('generate', '--engine', engine, '--input-ids', '1,2,3', '--max-tokens', '2');
    expect(result.status).not.toBe(0);
    expect(result.stdout).toBe('');
    expect(result.stderr).toMatch(/^kiln generate: /);
    expect(result.stderr).toContain('cuda');
    const json = kiln('generate', '--engine', engine, '--input-ids', '1,2,3', '--max-tokens', '2', '--json', '--logits-out', logits, '--verbose');
    expect(json.status).not.toBe(0);
    expect(json.stdout).toBe('');
    expect(json.stderr).toContain('cuda');
    expect(listFiles(root)).toEqual(before);
  });

  it('kiln generate --model --target cuda builds into the cache as the cpu path does', () => {
    const result = kiln('generate', '--model', FIXTURE, '--target', 'cuda', '--dtype', 'bfloat16', '--input-ids', '1,2,3', '--max-tokens', '2', '--json');
    if (runsCuda) {
      expect(result.status).toBe(0);
    } else {
      expect(result.status).not.toBe(0);
      expect(result.stdout).toBe('');
      expect(result.stderr).toContain('cuda');
    }
    const engines = fs.readdirSync(path.join(root, 'cache', 'engines'));
    expect(engines).toHaveLength(1);
    const config = JSON.parse(fs.readFileSync(path.join(root, 'cache', 'engines', engines[0], 'config.json'), 'utf8'));
    expect(config.target).toEqual({ backend: 'cuda', computeCapability: defaultComputeCapability(), activationDType: 'bfloat16' });
    // The intermediate checkpoint is gone.
    expect(fs.readdirSync(path.join(root, 'cache', 'tmp'))).toEqual([]);
    // The same command finds that engine again rather than building another.
    kiln('generate', '--model', FIXTURE, '--target', 'cuda', '--dtype', 'bfloat16', '--input-ids', '1,2,3', '--max-tokens', '2', '--json');
    expect(fs.readdirSync(path.join(root, 'cache', 'engines'))).toEqual(engines);
  });

  it.each([
    [['--engine', 'e', '--target', 'cuda'], '--target: applies to --model only'],
    [['--engine', 'e', '--dtype', 'bfloat16'], '--dtype: applies to --model only'],
    [['--target', 'gpu'], '--target: expected cpu or cuda, got "gpu"'],
    [['--dtype', 'int4'], '--dtype: expected one of float32, float16, bfloat16, got "int4"'],
  ])('generate %j is refused before anything is built or loaded', (args, message) => {
    const result = kiln('generate', ...args, '--input-ids', '1,2,3', '--max-tokens', '2');
    expect(result.status).toBe(1);
    expect(result.stdout).toBe('');
    expect(result.stderr).toMatch(new RegExp(`^kiln generate: ${message.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
  });
});

describe('KV cache flags and --verbose', () => {
  let engine: string;
  beforeAll(() => {
    engine = path.join(root, 'engine-cpu');
    const build = kiln('build', '--checkpoint', checkpoint, '--output', engine, '--max-batch-size', '2', '--max-seq-len', '64');
    expect(build.status).toBe(0);
  });

  it('are documented by generate, serve and bench', () => {
    for (const command of ['generate', 'serve', 'bench']) {
      const help = kiln(command, '--help').stdout;
      for (const flag of ['--kv-cache-free-gpu-memory-fraction <f>', '--kv-cache-bytes <n>', '--verbose', '--target <target>', '--dtype <dtype>']) {
        expect([command, help.includes(flag)]).toEqual([command, true]);
      }
    }
  });

  it('--verbose prints where the engine runs and its memory on stderr; --kv-cache-bytes sizes the cache', () => {
    // The tiny llama's KV: 2 layers x (K and V) x 2 kv heads x 16 dims x 4 bytes = 512 bytes a token.
    const result = kiln('generate', '--engine', engine, '--input-ids', '1,2,3', '--max-tokens', '2', '--json', '--verbose', '--kv-cache-bytes', String(32 * 512));
    expect(result.status).toBe(0);
    expect(JSON.parse(result.stdout).outputIds).toHaveLength(2);
    expect(result.stderr).toMatch(/^engine: cpu on cpu \((generic|avx2|avx512|avx512_bf16), \d+ threads\), weights \d+\.\d MiB, KV cache 0\.0 MiB = 32 tokens\n$/);

    // With the fraction too (of the host's available memory: gigabytes), the smaller size wins.
    const both = kiln('generate', '--engine', engine, '--input-ids', '1,2,3', '--max-tokens', '2', '--json', '--verbose', '--kv-cache-free-gpu-memory-fraction', '0.5', '--kv-cache-bytes', String(48 * 512));
    expect(both.status).toBe(0);
    expect(both.stderr).toMatch(/KV cache 0\.0 MiB = 48 tokens\n$/);

    // With neither: maxBatchSize x maxSeqLen tokens.
    const byDefault = kiln('generate', '--engine', engine, '--input-ids', '1,2,3', '--max-tokens', '2', '--json', '--verbose');
    expect(byDefault.status).toBe(0);
    expect(byDefault.stderr).toMatch(/KV cache 0\.1 MiB = 128 tokens\n$/);

    // Without --verbose, stderr stays empty.
    const quiet = kiln('generate', '--engine', engine, '--input-ids', '1,2,3', '--max-tokens', '2', '--json');
    expect(quiet.stderr).toBe('');
    expect(quiet.stdout).toBe(result.stdout);
  });

  it.each([
    ['--kv-cache-free-gpu-memory-fraction', '0', 'expected a number in (0, 1], got "0"'],
    ['--kv-cache-free-gpu-memory-fraction', '1.5', 'expected a number in (0, 1], got "1.5"'],
    ['--kv-cache-free-gpu-memory-fraction', 'half', 'expected a number in (0, 1], got "half"'],
    ['--kv-cache-bytes', '0', 'expected a positive integer, got "0"'],
    ['--kv-cache-bytes', '1e9', 'expected a positive integer, got "1e9"'],
  ])('%s %s is refused, naming the flag', (flag, value, message) => {
    for (const command of ['generate', 'bench']) {
      const result = kiln(command, '--engine', engine, ...(command === 'generate' ? ['--input-ids', '1'] : []), flag, value);
      expect(result.status).toBe(1);
      expect(result.stderr).toBe(`kiln ${command}: ${flag}: ${message}\n`);
    }
  });
});
