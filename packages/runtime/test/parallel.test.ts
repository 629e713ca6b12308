// Tensor and pipeline parallelism under a real `mpirun` (Open MPI, real processes): each fixture converted
// with --tp-size 2 and, separately, --pp-size 2, built into one engine per rank, run by `mpirun -n 2` on
// generate-rank.js, must give the single-rank engine's greedy tokens and its generation logits within
// 1e-4 relative (per row: max |difference| / max |logit|). Then a rank killed mid-generation must end the
// job within 30 s with a message naming it. Every mpirun has a timeout.
// The ranks run the built packages (dist/), as `kiln` does: `npm ci` builds them (`npm run build:ts`).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, promises as fs, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildEngine } from '@kiln/builder';
import { convertCheckpoint } from '@kiln/convert';
import { Engine } from '@kiln/runtime';
import { scribe7mPath } from '@kiln/scribe-7m';

const REPO = path.resolve(__dirname, '..', '..', '..');
const RANK_SCRIPT = path.join(__dirname, 'parallel', 'generate-rank.js');
// mpirun refuses root without these (CI containers run as root); harmless otherwise.
const MPI_ENV = { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1', OMPI_MCA_btl: 'self,vader' };
const MPIRUN = ['-n', '2', '--oversubscribe', '--bind-to', 'none'];

const PROMPTS = [
  [5, 6, 7, 8, 9, 10, 11],
  [40, 41, 42],
];
const MAX_TOKENS = 8;

interface Generated {
  outputIds: number[];
  generationLogits: number[];
}

let tmpDir: string;
beforeAll(() => {
  tmpDir = mkdtempSync(path.join(os.tmpdir(), 'kiln-parallel-'));
});
afterAll(() => {
  rmSync(tmpDir, { recursive: true, force: true });
});

async function singleRank(engineDir: string): Promise<Generated[]> {
  const engine = await Engine.load(engineDir, { numThreads: 1 });
  try {
    const results = await Promise.all(PROMPTS.map((inputIds) => engine.generate(inputIds, { maxTokens: MAX_TOKENS, ignoreEos: true, returnGenerationLogits: true })));
    return results.map((r) => ({ outputIds: r.outputIds, generationLogits: Array.from(r.generationLogits ?? []) }));
  } finally {
    await engine.dispose();
  }
}

function mpirunGenerate(engineDir: string, outFile: string, extra: string[] = [], timeout = 120_000) {
  const prompts = PROMPTS.map((p) => p.join(',')).join(';');
  return spawnSync('mpirun', [...MPIRUN, process.execPath, RANK_SCRIPT, engineDir, prompts, String(MAX_TOKENS), outFile, ...extra], {
    env: MPI_ENV,
    encoding: 'utf8',
    timeout,
  });
}

/** Per generated row: max |a - b| over the row / max |a| over the row; the worst row. */
function worstRowError(a: number[], b: number[], vocab: number): number {
  expect(b.length).toBe(a.length);
  let worst = 0;
  for (let row = 0; row * vocab < a.length; row++) {
    let scale = 0;
    let diff = 0;
    for (let i = row * vocab; i < (row + 1) * vocab; i++) {
      scale = Math.max(scale, Math.abs(a[i]));
      diff = Math.max(diff, Math.abs(a[i] - b[i]));
    }
    worst = Math.max(worst, diff / scale);
  }
  return worst;
}

const MODELS: Array<[string, string]> = [
  ['llama', path.join(REPO, 'fixtures/hf-tiny/llama')],
  ['qwen2', path.join(REPO, 'fixtures/hf-tiny/qwen2')],
  ['gpt_neox', path.join(REPO, 'fixtures/hf-tiny/gpt_neox')],
  ['mixtral', path.join(REPO, 'fixtures/hf-tiny/mixtral')],
  ['scribe-7m', scribe7mPath],
];

describe.each(MODELS)('%s under mpirun -n 2', (name, modelDir) => {
  let reference: Generated[];
  let vocab: number;

  beforeAll(async () => {
    const checkpointDir = path.join(tmpDir, `${name}-checkpoint`);
    const engineDir = path.join(tmpDir, `${name}-engine`);
    await convertCheckpoint({ modelDir, outputDir: checkpointDir, dtype: 'float32' });
    await buildEngine({ checkpointDir, outputDir: engineDir, config: { maxBatchSize: 4, maxSeqLen: 64 } });
    reference = await singleRank(engineDir);
    vocab = reference[0].generationLogits.length / MAX_TOKENS;
  });

  it.each([
    ['tp 2', 2, 1],
    ['pp 2', 1, 2],
  ])('%s: greedy tokens equal to the single-rank engine, logits within 1e-4', async (label, tpSize, ppSize) => {
    const tag = `${name}-tp${tpSize}-pp${ppSize}`;
    const checkpointDir = path.join(tmpDir, `${tag}-checkpoint`);
    const engineDir = path.join(tmpDir, `${tag}-engine`);
    await convertCheckpoint({ modelDir, outputDir: checkpointDir, dtype: 'float32', tpSize, ppSize });
    await buildEngine({ checkpointDir, outputDir: engineDir, config: { maxBatchSize: 4, maxSeqLen: 64 } });
    const config = JSON.parse(await fs.readFile(path.join(engineDir, 'config.json'), 'utf8')) as { engineFiles: string[] };
    expect(config.engineFiles).toEqual(['rank0.engine', 'rank1.engine']);

    const outFile = path.join(tmpDir, `${tag}.json`);
    const run = mpirunGenerate(engineDir, outFile);
    expect({ status: run.status, stderr: run.stderr }).toEqual({ status: 0, stderr: '' });
    const parallel = JSON.parse(readFileSync(outFile, 'utf8')) as Generated[];
    expect(parallel.map((g) => g.outputIds)).toEqual(reference.map((g) => g.outputIds));
    for (let i = 0; i < PROMPTS.length; i++) {
      expect(worstRowError(reference[i].generationLogits, parallel[i].generationLogits, vocab)).toBeLessThanOrEqual(1e-4);
    }
  });
});

describe('failures', () => {
  let engineDir: string;
  beforeAll(async () => {
    const checkpointDir = path.join(tmpDir, 'failure-checkpoint');
    engineDir = path.join(tmpDir, 'failure-engine');
    await convertCheckpoint({ modelDir: scribe7mPath, outputDir: checkpointDir, tpSize: 2 });
    await buildEngine({ checkpointDir, outputDir: engineDir, config: { maxBatchSize: 4, maxSeqLen: 2048 } });
  });

  it.each([1, 0])('rank %i killed mid-generation ends every rank within 30 s, non-zero, naming it', async (killed) => {
    const outFile = path.join(tmpDir, `killed-${killed}.json`);
    const started = Date.now();
    // Long enough (2000 tokens) that rank 0 is still generating when the rank dies at the first token.
    const child = spawn('mpirun', [...MPIRUN, process.execPath, RANK_SCRIPT, engineDir, '5,6,7', '2000', outFile, String(killed)], { env: MPI_ENV });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    const code = await new Promise<number | null>((resolve) => child.on('close', (status) => resolve(status)));
    clearTimeout(timer);
    const seconds = (Date.now() - started) / 1000;
    expect(existsSync(`${outFile}.started`)).toBe(true);  // generation had begun
    expect(existsSync(outFile)).toBe(false);  // and did not finish
    expect(code).not.toBe(0);
    expect(code).not.toBeNull();  // mpirun ended on its own, not by the 60 s guard
    expect(seconds).toBeLessThan(30);
    expect(output).toMatch(new RegExp(`rank ${killed}\\b.*(signal 9|Killed)`));
  });

  it('a rank that cannot load its engine file ends the job, naming itself', async () => {
    const broken = path.join(tmpDir, 'broken-engine');
    await fs.cp(engineDir, broken, { recursive: true });
    const file = path.join(broken, 'rank1.engine');
    const bytes = await fs.readFile(file);
    bytes[bytes.length - 100] ^= 0xff;  // a weight byte: the checksum no longer matches
    await fs.writeFile(file, bytes);
    const run = mpirunGenerate(broken, path.join(tmpDir, 'broken.json'), [], 60_000);
    expect(run.status).not.toBe(0);
    expect(run.status).not.toBeNull();
    expect(`${run.stdout}${run.stderr}`).toMatch(/rank 1 of 2: cannot load .*rank1\.engine.*checksum/);
  });

  it('a tp/pp engine outside mpirun is refused with the command that runs it', async () => {
    await expect(Engine.load(engineDir)).rejects.toThrow(/engine of 2 ranks, but this process was not launched by mpirun: run it with `mpirun -n 2/);
  });
});
