// `kiln generate`'s sampling and beam search flags and `kiln build --max-beam-width`, end to end through
// the built executable (packages/cli/dist): beam search on the llama fixture against transformers'
// beam_search (fixtures/hf-tiny/llama/reference.json), seeded sampling, and flag validation.
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const kilnBin = path.resolve(__dirname, '..', 'dist', 'bin', 'kiln.js');
const llamaFixture = path.resolve(__dirname, '..', '..', '..', 'fixtures', 'hf-tiny', 'llama');
const reference = JSON.parse(fs.readFileSync(path.join(llamaFixture, 'reference.json'), 'utf8')) as {
  prompts: { input_ids: number[] }[];
  beam_search: { prompt_index: number; num_beams: number; max_new_tokens: number; length_penalty: number; sequences: number[][]; sequence_scores: number[] };
};

interface GenerateJson {
  outputIds: number[];
  text: string;
  finishReason: string;
  sequences?: { outputIds: number[]; text: string; finishReason: string; score: number }[];
}

describe('kiln generate: sampling and beam search', () => {
  let workDir: string;
  let engineDir: string;
  let env: NodeJS.ProcessEnv;

  function kiln(...args: string[]): SpawnSyncReturns<string> {
    return spawnSync(process.execPath, [kilnBin, ...args], { env, encoding: 'utf8', timeout: 300_000 });
  }

  beforeAll(() => {
    if (!fs.existsSync(kilnBin)) throw new Error(`${kilnBin} is missing: build with \`npx tsc -b tsconfig.build.json\` first`);
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-cli-sampling-'));
    env = { ...process.env, KILN_CACHE_DIR: path.join(workDir, 'cache') };
    const checkpoint = path.join(workDir, 'checkpoint');
    engineDir = path.join(workDir, 'engine');
    expect(kiln('convert', '--model', llamaFixture, '--output', checkpoint, '--dtype', 'float32').status).toBe(0);
    const built = kiln('build', '--checkpoint', checkpoint, '--output', engineDir, '--max-beam-width', '4');
    expect(built.stderr).toBe('');
    expect(built.status).toBe(0);
    const header = JSON.parse(fs.readFileSync(path.join(engineDir, 'config.json'), 'utf8')) as { buildConfig: { maxBeamWidth: number } };
    expect(header.buildConfig.maxBeamWidth).toBe(4);
  });
  afterAll(() => fs.rmSync(workDir, { recursive: true, force: true }));

  test("--beam-width 4 --num-return-sequences 4 --json: transformers' beam_search sequences and scores", () => {
    const b = reference.beam_search;
    const result = kiln(
      'generate', '--engine', engineDir, '--input-ids', reference.prompts[b.prompt_index].input_ids.join(','),
      '--max-tokens', String(b.max_new_tokens), '--ignore-eos', '--beam-width', String(b.num_beams),
      '--num-return-sequences', String(b.num_beams), '--length-penalty', String(b.length_penalty), '--json',
    );
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    const output = JSON.parse(result.stdout) as GenerateJson;
    const sequences = output.sequences ?? [];
    expect(sequences.map((s) => s.outputIds)).toEqual(b.sequences);
    sequences.forEach((s, i) => expect(Math.abs(s.score - b.sequence_scores[i])).toBeLessThan(1e-4));
    expect(output.outputIds).toEqual(b.sequences[0]);
    expect(output.text).toBe(sequences[0].text);
    expect(output.finishReason).toBe('length');
  });

  test('--temperature with --seed is reproducible; another seed differs', () => {
    const run = (seed: string) => {
      const result = kiln('generate', '--engine', engineDir, '--input-ids', '1,47,467', '--max-tokens', '16', '--ignore-eos',
        '--temperature', '1.2', '--top-k', '50', '--top-p', '0.95', '--seed', seed, '--json');
      expect(result.status).toBe(0);
      return (JSON.parse(result.stdout) as GenerateJson).outputIds;
    };
    const a = run('42');
    expect(run('42')).toEqual(a);
    expect([run('43'), run('44')].some((other) => other.join() !== a.join())).toBe(true);
  });

  test('every sampling flag is accepted', () => {
    const result = kiln('generate', '--engine', engineDir, '--input-ids', '1,47,467', '--max-tokens', '8',
      '--temperature', '0.8', '--top-k', '40', '--top-p', '0.9', '--min-p', '0.01', '--repetition-penalty', '1.1',
      '--presence-penalty', '0.5', '--frequency-penalty', '0.5', '--no-repeat-ngram-size', '3', '--seed', '18446744073709551615',
      '--stop', 'zz', '--stop', 'qq', '--bad-words', 'the', '--bad-words', 'and', '--min-tokens', '2', '--logprobs', '3',
      '--num-return-sequences', '2', '--json');
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    const output = JSON.parse(result.stdout) as GenerateJson & { logprobs: { logprob: number; top: unknown[] }[] };
    expect(output.sequences).toHaveLength(2);
    expect(output.logprobs).toHaveLength(output.outputIds.length);
    for (const entry of output.logprobs) expect(entry.top).toHaveLength(3);
  });

  test.each([
    [['--temperature', '-1'], '--temperature'],
    [['--temperature', 'hot'], '--temperature'],
    [['--top-p', '0'], '--top-p'],
    [['--top-k', '-3'], '--top-k'],
    [['--beam-width', '8'], '--beam-width'],
    [['--beam-width', '2', '--num-return-sequences', '3'], '--num-return-sequences'],
    [['--logprobs', '50'], '--logprobs'],
    [['--seed', 'abc'], '--seed'],
    [['--no-repeat-ngram-size', 'x'], '--no-repeat-ngram-size'],
    [['--early-stopping', 'maybe'], '--early-stopping'],
  ])('%j exits 1 naming %s', (flags, flag) => {
    const result = kiln('generate', '--engine', engineDir, '--input-ids', '1,47', '--max-tokens', '4', ...flags);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(flag);
    expect(result.stdout).toBe('');
  });

  test('kiln build --max-beam-width above --max-batch-size is refused', () => {
    const result = kiln('build', '--checkpoint', path.join(workDir, 'checkpoint'), '--output', path.join(workDir, 'bad'),
      '--max-batch-size', '2', '--max-beam-width', '4');
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('maxBeamWidth');
  });
});
