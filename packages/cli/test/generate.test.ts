// End to end: the built `kiln` executable (packages/cli/dist, built by `tsc -b tsconfig.build.json`) on the
// built-in scribe-7m, against the reference outputs transformers computed for it.
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Tokenizer } from '@kiln/runtime';
import { scribe7mPath } from '@kiln/scribe-7m';

const kilnBin = path.resolve(__dirname, '..', 'dist', 'bin', 'kiln.js');

interface ScribeReference {
  prompts: { input_ids: number[]; greedy: number[]; logits_tensor: string; logits_shape: [number, number] }[];
  prompts_text: string[];
}
const reference = JSON.parse(fs.readFileSync(path.join(scribe7mPath, 'reference.json'), 'utf8')) as ScribeReference;

/** A minimal safetensors reader for float32 tensors (the test must not trust the writer it checks). */
function readSafetensors(file: string): Map<string, { shape: number[]; data: Float32Array }> {
  const bytes = fs.readFileSync(file);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  expect((8 + headerLength) % 8).toBe(0);
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8')) as Record<
    string,
    { dtype: string; shape: number[]; data_offsets: [number, number] }
  >;
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    expect(entry.dtype).toBe('F32');
    const [begin, end] = entry.data_offsets;
    const start = 8 + headerLength + begin;
    expect(start + (end - begin)).toBeLessThanOrEqual(bytes.length);
    const data = new Float32Array(bytes.buffer.slice(bytes.byteOffset + start, bytes.byteOffset + start + (end - begin)));
    expect(data.length).toBe(entry.shape.reduce((a, b) => a * b, 1));
    tensors.set(name, { shape: entry.shape, data });
  }
  return tensors;
}

function relativeError(actual: Float32Array, expected: Float32Array): number {
  let difference = 0;
  let norm = 0;
  for (let index = 0; index < expected.length; index++) {
    difference += (actual[index] - expected[index]) ** 2;
    norm += expected[index] ** 2;
  }
  return Math.sqrt(difference / norm);
}

describe('kiln generate', () => {
  let workDir: string;
  let env: NodeJS.ProcessEnv;
  let tokenizer: Tokenizer;

  function kiln(...args: string[]): SpawnSyncReturns<string> {
    return spawnSync(process.execPath, [kilnBin, ...args], { env, encoding: 'utf8', timeout: 300_000 });
  }

  beforeAll(async () => {
    if (!fs.existsSync(kilnBin)) throw new Error(`${kilnBin} is missing: build with \`npx tsc -b tsconfig.build.json\` first`);
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-generate-'));
    env = { ...process.env, KILN_CACHE_DIR: path.join(workDir, 'cache') };
    tokenizer = await Tokenizer.load(scribe7mPath);
  });
  afterAll(() => fs.rmSync(workDir, { recursive: true, force: true }));

  it.each(reference.prompts_text.map((text, index) => [text, index] as const))(
    '--json reproduces the greedy reference of %j',
    (text, index) => {
      const result = kiln('generate', '--prompt', text, '--max-tokens', '24', '--json', '--ignore-eos');
      expect(result.stderr).toBe('');
      expect(result.status).toBe(0);
      const lines = result.stdout.trimEnd().split('\n');
      expect(lines).toHaveLength(1);
      const output = JSON.parse(lines[0]) as { outputIds: number[]; text: string; finishReason: string };
      expect(output.outputIds).toEqual(reference.prompts[index].greedy);
      expect(output.text).toBe(tokenizer.decode(reference.prompts[index].greedy, { skipSpecialTokens: true }));
      expect(output.finishReason).toBe('length');
    },
  );

  it('reuses the cached engine on the second call', () => {
    const engines = fs.readdirSync(path.join(workDir, 'cache', 'engines'));
    expect(engines).toHaveLength(1);
    const configPath = path.join(workDir, 'cache', 'engines', engines[0], 'config.json');
    const before = fs.statSync(configPath).mtimeMs;
    expect(kiln('generate', '--prompt', 'A man who', '--max-tokens', '2', '--json').status).toBe(0);
    expect(fs.statSync(configPath).mtimeMs).toBe(before);
    expect(fs.readdirSync(path.join(workDir, 'cache', 'engines'))).toEqual(engines);
  });

  it('streams the same text without --json, ending with a newline', () => {
    const index = 2;
    const result = kiln('generate', '--prompt', reference.prompts_text[index], '--max-tokens', '24', '--ignore-eos');
    expect(result.status).toBe(0);
    expect(result.stdout).toBe(`${tokenizer.decode(reference.prompts[index].greedy, { skipSpecialTokens: true })}\n`);
  });

  it('stops at the end token without --ignore-eos', () => {
    const greedy = reference.prompts[0].greedy;
    const result = kiln('generate', '--input-ids', reference.prompts[0].input_ids.join(','), '--max-tokens', '24', '--json');
    expect(result.status).toBe(0);
    const output = JSON.parse(result.stdout) as { outputIds: number[]; finishReason: string };
    expect(output.outputIds).toEqual(greedy.slice(0, greedy.indexOf(0) + 1));
    expect(output.finishReason).toBe('eos');
  });

  it('--logits-out writes safetensors whose logits match the reference', () => {
    const referenceLogits = readSafetensors(path.join(scribe7mPath, 'reference.safetensors'));
    const index = 1;
    const { input_ids: inputIds, greedy, logits_tensor: tensorName } = reference.prompts[index];
    const file = path.join(workDir, 'logits.safetensors');
    const result = kiln('generate', '--input-ids', inputIds.join(','), '--max-tokens', '24', '--json', '--ignore-eos', '--logits-out', file);
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect((JSON.parse(result.stdout) as { outputIds: number[] }).outputIds).toEqual(greedy);

    const written = readSafetensors(file);
    const { shape: referenceShape, data: referenceData } = referenceLogits.get(tensorName)!;
    const vocab = referenceShape[1];
    const context = written.get('context_logits')!;
    const generation = written.get('generation_logits')!;
    expect(context.shape).toEqual([inputIds.length, vocab]);
    expect(generation.shape).toEqual([greedy.length, vocab]);
    // Reference row t predicts token t + 1: rows 0..P-1 are the context logits, row P-1+k chose token k.
    const p = inputIds.length;
    expect(relativeError(context.data, referenceData.subarray(0, p * vocab))).toBeLessThan(1e-4);
    for (let k = 0; k < greedy.length; k++) {
      const row = referenceData.subarray((p - 1 + k) * vocab, (p + k) * vocab);
      expect(relativeError(generation.data.subarray(k * vocab, (k + 1) * vocab), row)).toBeLessThan(1e-4);
    }
    expect(fs.readdirSync(workDir).filter((name) => name.includes('.tmp-'))).toEqual([]);
  });

  describe('errors', () => {
    it('names a missing --model folder', () => {
      const missing = path.join(workDir, 'no-such-model');
      const result = kiln('generate', '--model', missing, '--prompt', 'Hi', '--max-tokens', '2');
      expect(result.status).toBe(1);
      expect(result.stdout).toBe('');
      expect(result.stderr).toBe(`kiln generate: ${missing} does not exist; give an engine folder, a Hugging Face model folder, or a Hub id org/name[@revision]\n`);
    });

    it('names the numbers when the prompt does not fit maxSeqLen', () => {
      const checkpoint = path.join(workDir, 'scribe-checkpoint');
      const engine = path.join(workDir, 'scribe-engine-8');
      expect(kiln('convert', '--model', scribe7mPath, '--output', checkpoint).status).toBe(0);
      const build = kiln('build', '--checkpoint', checkpoint, '--output', engine, '--max-seq-len', '8');
      expect(build.stderr).toBe('');
      expect(build.status).toBe(0);
      const result = kiln('generate', '--engine', engine, '--input-ids', '1,2,3,4,5,6,7,8', '--max-tokens', '2');
      expect(result.status).toBe(1);
      expect(result.stderr).toMatch(/^kiln generate: the prompt has 8 tokens, but the engine's maxSeqLen is 8/);
      expect(result.stderr).toContain(engine);
      // A prompt that fits still runs, and stops at maxSeqLen.
      const fits = kiln('generate', '--engine', engine, '--input-ids', '934,260,2385', '--max-tokens', '24', '--json', '--ignore-eos');
      expect(fits.status).toBe(0);
      const output = JSON.parse(fits.stdout) as { outputIds: number[]; finishReason: string };
      expect(output.outputIds).toEqual(reference.prompts[0].greedy.slice(0, 5));
      expect(output.finishReason).toBe('length');
    });

    it('names the engine file when it is corrupt', () => {
      const engines = fs.readdirSync(path.join(workDir, 'cache', 'engines'));
      const source = path.join(workDir, 'cache', 'engines', engines[0]);
      const corrupt = path.join(workDir, 'corrupt-engine');
      fs.cpSync(source, corrupt, { recursive: true });
      const engineFile = path.join(corrupt, 'rank0.engine');
      const bytes = fs.readFileSync(engineFile);
      bytes[Math.floor(bytes.length / 2)] ^= 0x40;
      fs.writeFileSync(engineFile, bytes);
      const result = kiln('generate', '--engine', corrupt, '--prompt', 'Hi', '--max-tokens', '2', '--json');
      expect(result.status).toBe(1);
      expect(result.stdout).toBe('');
      expect(result.stderr).toMatch(/^kiln generate: /);
      expect(result.stderr).toContain(engineFile);
    });

    it('rejects bad arguments before loading anything', () => {
      const noPrompt = kiln('generate', '--max-tokens', '2');
      expect(noPrompt.status).toBe(1);
      expect(noPrompt.stderr).toBe('kiln generate: give exactly one of --prompt and --input-ids\n');
      const badIds = kiln('generate', '--input-ids', '1,x', '--max-tokens', '2');
      expect(badIds.stderr).toMatch(/^kiln generate: --input-ids: "x" is not a token id/);
      const badMax = kiln('generate', '--prompt', 'Hi', '--max-tokens', '0');
      expect(badMax.stderr).toBe('kiln generate: --max-tokens: expected a positive integer, got "0"\n');
      const noFolder = kiln('generate', '--prompt', 'Hi', '--logits-out', path.join(workDir, 'nope', 'x.safetensors'));
      expect(noFolder.stderr).toBe(`kiln generate: --logits-out: folder ${path.join(workDir, 'nope')} does not exist\n`);
    });

    it('refuses context logits from an engine built without them', () => {
      const engines = fs.readdirSync(path.join(workDir, 'cache', 'engines'));
      const plain = engines
        .map((name) => path.join(workDir, 'cache', 'engines', name))
        .find((dir) => JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')).buildConfig.gatherContextLogits === false)!;
      const file = path.join(workDir, 'refused.safetensors');
      const result = kiln('generate', '--engine', plain, '--prompt', 'Hi', '--max-tokens', '2', '--logits-out', file);
      expect(result.status).toBe(1);
      expect(result.stderr).toContain('gatherContextLogits');
      expect(fs.existsSync(file)).toBe(false);
    });
  });
});
