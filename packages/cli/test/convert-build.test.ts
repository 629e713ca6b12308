import { spawnSync } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Command, CommanderError } from 'commander';
import { buildEngine } from '@kiln/builder';
import { registerBuildCommand } from '../src/commands/build';
import { registerConvertCommand } from '../src/commands/convert';

// The builder is exercised by its own tests; here only how flags become BuildOptions matters.
jest.mock('@kiln/builder', () => ({ buildEngine: jest.fn() }));
const mockedBuild = buildEngine as jest.MockedFunction<typeof buildEngine>;

const REPO = path.resolve(__dirname, '../../..');
const FIXTURE = path.join(REPO, 'fixtures/hf-tiny/llama');

interface Run {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/** Runs `kiln <args>` in-process on a fresh program, capturing what it prints and its exit code. */
async function kiln(...args: string[]): Promise<Run> {
  let stdout = '';
  let stderr = '';
  const program = new Command('kiln').exitOverride().configureOutput({
    writeOut: (text) => (stdout += text),
    writeErr: (text) => (stderr += text),
  });
  registerConvertCommand(program);
  registerBuildCommand(program);
  const out = jest.spyOn(process.stdout, 'write').mockImplementation((chunk) => ((stdout += String(chunk)), true));
  const err = jest.spyOn(process.stderr, 'write').mockImplementation((chunk) => ((stderr += String(chunk)), true));
  process.exitCode = undefined;
  let exitCode = 0;
  try {
    await program.parseAsync(['node', 'kiln', ...args]);
    exitCode = Number(process.exitCode ?? 0);
  } catch (error) {
    if (!(error instanceof CommanderError)) throw error;
    exitCode = error.exitCode;
  } finally {
    out.mockRestore();
    err.mockRestore();
    process.exitCode = undefined;
  }
  return { stdout, stderr, exitCode };
}

let root: string;
beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-cli-'));
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});
beforeEach(() => mockedBuild.mockReset());

describe('kiln convert', () => {
  it('documents its flags', async () => {
    const { stdout, exitCode } = await kiln('convert', '--help');
    expect(exitCode).toBe(0);
    for (const flag of ['--model <hf-dir|file.gguf>', '--output <checkpoint-dir>', '--dtype <dtype>', '--list-architectures']) {
      expect(stdout).toContain(flag);
    }
    expect(stdout).toContain('float32, float16, bfloat16');
  });

  it('lists the supported architectures', async () => {
    const { stdout, stderr, exitCode } = await kiln('convert', '--list-architectures');
    expect(exitCode).toBe(0);
    expect(stderr).toBe('');
    expect(stdout.trim().split('\n')).toEqual(expect.arrayContaining(['LlamaForCausalLM', 'MistralForCausalLM', 'Qwen2ForCausalLM']));
  });

  it.each([
    [['--output', 'x'], 'kiln convert: --model <hf-dir> is required\n'],
    [['--model', 'x'], 'kiln convert: --output <checkpoint-dir> is required\n'],
    [['--model', 'x', '--output', 'y', '--dtype', 'int8'], 'kiln convert: --dtype: expected one of float32, float16, bfloat16, got "int8"\n'],
  ])('rejects %j', async (args, message) => {
    expect(await kiln('convert', ...args)).toEqual({ stdout: '', stderr: message, exitCode: 1 });
  });

  it('names a model folder that does not exist, leaving nothing behind', async () => {
    const output = path.join(root, 'never');
    const { stdout, stderr, exitCode } = await kiln('convert', '--model', path.join(root, 'nope'), '--output', output);
    expect({ stdout, exitCode }).toEqual({ stdout: '', exitCode: 1 });
    expect(stderr).toBe(`kiln convert: ${path.join(root, 'nope')}: model folder not found\n`);
    expect(existsSync(output)).toBe(false);
  });

  it('converts the tiny llama, printing one summary line on stdout', async () => {
    const output = path.join(root, 'checkpoint');
    const { stdout, stderr, exitCode } = await kiln('convert', '--model', FIXTURE, '--output', output, '--dtype', 'bfloat16');
    expect(stderr).toBe(''); // no progress when stderr is not a terminal
    expect(exitCode).toBe(0);
    expect(stdout).toMatch(new RegExp(`^Converted LlamaForCausalLM \\(bfloat16, [0-9.]+ kB\\) to ${output} in [0-9.]+ s\\n$`));
    expect(JSON.parse(await fs.readFile(path.join(output, 'config.json'), 'utf8')).dtype).toBe('bfloat16');
  });
});

describe('kiln build', () => {
  it('documents its flags', async () => {
    const { stdout, exitCode } = await kiln('build', '--help');
    expect(exitCode).toBe(0);
    for (const flag of [
      '--checkpoint <checkpoint-dir>',
      '--output <engine-dir>',
      '--max-batch-size <n>',
      '--max-seq-len <n>',
      '--max-num-tokens <n>',
      '--gather-context-logits',
      '--tokens-per-block <n>',
      '--force',
      '--target <target>',
      '--dtype <dtype>',
      '--compute-capability <x.y>',
    ]) {
      expect(stdout).toContain(flag);
    }
  });

  it('passes the flags to the builder and prints one summary line', async () => {
    mockedBuild.mockImplementation(async (options) => ({
      engineDir: path.resolve(options.outputDir),
      cached: false,
      buildHash: 'abc123',
      config: { target: 'cpu', maxBatchSize: 4, maxSeqLen: 64, maxNumTokens: 32, gatherContextLogits: true, maxBeamWidth: 1, tokensPerBlock: 8, dtype: 'float32', isa: 'avx2' },
    }));
    const args = ['--checkpoint', 'ck', '--output', 'eng', '--max-batch-size', '4', '--max-seq-len', '64'];
    const run = await kiln('build', ...args, '--max-num-tokens', '32', '--tokens-per-block', '8', '--gather-context-logits', '--force');
    expect(run.exitCode).toBe(0);
    expect(run.stderr).toBe('');
    expect(mockedBuild).toHaveBeenCalledTimes(1);
    expect(mockedBuild.mock.calls[0][0]).toMatchObject({
      checkpointDir: 'ck',
      outputDir: 'eng',
      force: true,
      config: { maxBatchSize: 4, maxSeqLen: 64, maxNumTokens: 32, tokensPerBlock: 8, gatherContextLogits: true },
    });
    expect(run.stdout).toMatch(/^Built engine .*eng \(build abc123; maxBatchSize 4, maxSeqLen 64, maxNumTokens 32, tokensPerBlock 8, gatherContextLogits true, avx2\) in [0-9.]+ s\n$/);

    const defaults = await kiln('build', '--checkpoint', 'ck', '--output', 'eng');
    expect(defaults.exitCode).toBe(0);
    expect(mockedBuild.mock.calls[1][0]).toMatchObject({ config: {}, force: false });
  });

  it('passes --target cuda, --dtype and --compute-capability to the builder', async () => {
    mockedBuild.mockImplementation(async (options) => ({
      engineDir: path.resolve(options.outputDir),
      cached: false,
      buildHash: 'c0da',
      config: { target: 'cuda', maxBatchSize: 8, maxSeqLen: 64, maxNumTokens: 64, gatherContextLogits: false, maxBeamWidth: 1, tokensPerBlock: 16, dtype: 'bfloat16', computeCapability: '8.0' },
    }));
    const run = await kiln('build', '--checkpoint', 'ck', '--output', 'eng', '--target', 'cuda', '--dtype', 'bfloat16', '--compute-capability', '8.0');
    expect(run.stderr).toBe('');
    expect(run.exitCode).toBe(0);
    expect(mockedBuild.mock.calls[0][0].config).toEqual({ target: 'cuda', dtype: 'bfloat16', computeCapability: '8.0' });
    expect(run.stdout).toMatch(/^Built engine .*eng \(build c0da; .*gatherContextLogits false, cuda \(compute capability 8\.0, bfloat16\)\) in [0-9.]+ s\n$/);

    await kiln('build', '--checkpoint', 'ck', '--output', 'eng', '--target', 'cpu', '--dtype', 'float16');
    expect(mockedBuild.mock.calls[1][0].config).toEqual({ target: 'cpu', dtype: 'float16' });
  });

  it.each([
    [['--target', 'tpu'], '--target: expected cpu or cuda, got "tpu"'],
    [['--dtype', 'int8'], '--dtype: expected one of float32, float16, bfloat16, got "int8"'],
    [['--target', 'cuda', '--compute-capability', 'sm_90'], '--compute-capability: expected major.minor, e.g. 9.0, got "sm_90"'],
    [['--compute-capability', '9.0'], '--compute-capability: applies to --target cuda only'],
    [['--target', 'cpu', '--compute-capability', '9.0'], '--compute-capability: applies to --target cuda only'],
  ])('rejects %j, naming the flag', async (args, message) => {
    const run = await kiln('build', '--checkpoint', 'ck', '--output', 'eng', ...args);
    expect(run).toEqual({ stdout: '', stderr: `kiln build: ${message}\n`, exitCode: 1 });
    expect(mockedBuild).not.toHaveBeenCalled();
  });

  it('says when the engine was reused', async () => {
    mockedBuild.mockResolvedValue({
      engineDir: '/e',
      cached: true,
      buildHash: 'h',
      config: { target: 'cpu', maxBatchSize: 8, maxSeqLen: 256, maxNumTokens: 256, gatherContextLogits: false, maxBeamWidth: 1, tokensPerBlock: 16, dtype: 'float32', isa: 'generic' },
    });
    const { stdout, exitCode } = await kiln('build', '--checkpoint', 'ck', '--output', '/e');
    expect(exitCode).toBe(0);
    expect(stdout).toMatch(/^Engine \/e is up to date \(build h; .*\); --force rebuilds it\n$/);
  });

  it.each([
    ['--max-batch-size', '0'],
    ['--max-batch-size', 'abc'],
    ['--max-seq-len', '1.5'],
    ['--max-num-tokens', '-3'],
    ['--tokens-per-block', '1e3'],
    ['--max-seq-len', '99999999999999999999'],
  ])('rejects %s %s, naming the flag', async (flag, value) => {
    const run = await kiln('build', '--checkpoint', 'ck', '--output', 'eng', `${flag}=${value}`);
    expect(run).toEqual({ stdout: '', stderr: `kiln build: ${flag}: expected a positive integer, got ${JSON.stringify(value)}\n`, exitCode: 1 });
    expect(mockedBuild).not.toHaveBeenCalled();
  });

  it('requires --checkpoint and --output', async () => {
    expect((await kiln('build', '--output', 'e')).stderr).toBe('kiln build: --checkpoint <checkpoint-dir> is required\n');
    expect((await kiln('build', '--checkpoint', 'c')).stderr).toBe('kiln build: --output <engine-dir> is required\n');
  });

  it("reports the builder's error with the command name and exit code 1", async () => {
    mockedBuild.mockRejectedValue(new Error('/ck/config.json: format: expected "kiln-checkpoint", got undefined'));
    const run = await kiln('build', '--checkpoint', '/ck', '--output', 'eng');
    expect(run).toEqual({ stdout: '', stderr: 'kiln build: /ck/config.json: format: expected "kiln-checkpoint", got undefined\n', exitCode: 1 });
  });
});

// The real `kiln` binary (built by `npx tsc -b tsconfig.build.json`), as a user runs it.
const BIN = path.join(REPO, 'packages/cli/dist/bin/kiln.js');
describe('the kiln binary', () => {
  const run = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });

  it('prints help for convert and build', () => {
    expect(run('convert', '--help').stdout).toContain('--list-architectures');
    expect(run('build', '--help').stdout).toContain('--gather-context-logits');
  });

  it('exits 1 with the message on stderr', () => {
    const missing = run('convert', '--model', path.join(root, 'nope'), '--output', path.join(root, 'x'));
    expect(missing.status).toBe(1);
    expect(missing.stdout).toBe('');
    expect(missing.stderr).toContain(`kiln convert: ${path.join(root, 'nope')}: model folder not found`);
    const bad = run('build', '--checkpoint', root, '--output', path.join(root, 'e'), '--max-batch-size', 'zero');
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain('kiln build: --max-batch-size: expected a positive integer, got "zero"');
  });

  it('converts and builds the tiny llama', () => {
    const checkpoint = path.join(root, 'bin-checkpoint');
    const engine = path.join(root, 'bin-engine');
    const convert = run('convert', '--model', FIXTURE, '--output', checkpoint);
    expect(convert.stderr).toBe('');
    expect(convert.status).toBe(0);
    expect(convert.stdout).toMatch(/^Converted LlamaForCausalLM \(float32/);
    const build = run('build', '--checkpoint', checkpoint, '--output', engine, '--max-batch-size', '2', '--max-seq-len', '64');
    expect(build.stderr).toBe('');
    expect(build.status).toBe(0);
    expect(build.stdout).toMatch(/^Built engine /);
    expect(run('build', '--checkpoint', checkpoint, '--output', engine, '--max-batch-size', '2', '--max-seq-len', '64').stdout).toMatch(/is up to date/);
  });
});
