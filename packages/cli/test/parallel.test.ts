// `kiln generate | bench | serve` unchanged under `mpirun -n 2` on a tensor-parallel scribe-7m engine
// (issue 11): the output is printed once (rank 0), equal to the single-rank engine's, and `kiln serve`
// answers an OpenAI completion identical to the single-rank server's. Real Open MPI, real processes;
// every run has a timeout.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

const kilnBin = path.resolve(__dirname, '..', 'dist', 'bin', 'kiln.js');
const scribe = path.resolve(__dirname, '..', '..', 'scribe-7m', 'model');
// mpirun refuses root without these (CI containers run as root); harmless otherwise.
const env = { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1', OMPI_MCA_btl: 'self,vader' };
const MPIRUN = ['-n', '2', '--oversubscribe', '--bind-to', 'none'];

let tmpDir: string;
let singleEngine: string;
let tpEngine: string;

function kiln(args: string[], timeout = 120_000) {
  return spawnSync(process.execPath, [kilnBin, ...args], { env, encoding: 'utf8', timeout });
}

function mpirunKiln(args: string[], timeout = 120_000) {
  return spawnSync('mpirun', [...MPIRUN, process.execPath, kilnBin, ...args], { env, encoding: 'utf8', timeout });
}

beforeAll(() => {
  tmpDir = mkdtempSync(path.join(os.tmpdir(), 'kiln-cli-parallel-'));
  singleEngine = path.join(tmpDir, 'single');
  tpEngine = path.join(tmpDir, 'tp2');
  for (const [ckpt, engine, extra] of [
    ['single-ckpt', singleEngine, []],
    ['tp2-ckpt', tpEngine, ['--tp-size', '2']],
  ] as const) {
    const convert = kiln(['convert', '--model', scribe, '--output', path.join(tmpDir, ckpt), ...extra]);
    expect(convert.status).toBe(0);
    const build = kiln(['build', '--checkpoint', path.join(tmpDir, ckpt), '--output', engine, '--max-seq-len', '256', '--max-beam-width', '4']);
    expect(build.status).toBe(0);
  }
}, 240_000);

afterAll(() => {
  rmSync(tmpDir, { recursive: true, force: true });
});

test('kiln convert --tp-size: a mapping that does not fit names the model config and the size', () => {
  const result = kiln(['convert', '--model', scribe, '--output', path.join(tmpDir, 'bad'), '--tp-size', '3']);
  expect(result.status).toBe(1);
  expect(result.stderr).toMatch(/scribe-7m\/model\/config\.json: tp 3 x pp 1 does not fit this model: tp 3 does not divide the 8 attention heads/);
  const stages = kiln(['convert', '--model', scribe, '--output', path.join(tmpDir, 'bad'), '--pp-size', '7']);
  expect(stages.status).toBe(1);
  expect(stages.stderr).toMatch(/pp 7 exceeds the 6 layers/);
});

test('kiln generate under mpirun prints once, the single-rank engine\'s result', () => {
  const args = ['generate', '--prompt', 'And the LORD said unto Moses,', '--max-tokens', '16', '--json', '--threads', '1'];
  const single = kiln([...args, '--engine', singleEngine]);
  expect(single.status).toBe(0);
  const parallel = mpirunKiln([...args, '--engine', tpEngine]);
  expect({ status: parallel.status, stderr: parallel.stderr }).toEqual({ status: 0, stderr: '' });
  expect(parallel.stdout.trim().split('\n')).toHaveLength(1);
  expect(JSON.parse(parallel.stdout)).toEqual(JSON.parse(single.stdout));
});

test('beam search under mpirun (KV blocks copied on every rank as beams fork) equals the single-rank result', () => {
  const args = ['generate', '--prompt', 'And the LORD said', '--max-tokens', '20', '--beam-width', '4', '--json', '--threads', '1'];
  const single = kiln([...args, '--engine', singleEngine]);
  expect(single.status).toBe(0);
  const parallel = mpirunKiln([...args, '--engine', tpEngine]);
  expect({ status: parallel.status, stderr: parallel.stderr }).toEqual({ status: 0, stderr: '' });
  expect(JSON.parse(parallel.stdout)).toEqual(JSON.parse(single.stdout));
  expect((JSON.parse(single.stdout) as { outputIds: number[] }).outputIds).toHaveLength(20);
});

test('kiln bench under mpirun prints one report', () => {
  const result = mpirunKiln(['bench', '--engine', tpEngine, '--num-requests', '4', '--input-len', '8', '--output-len', '4', '--concurrency', '2', '--json', '--threads', '1']);
  expect({ status: result.status, stderr: result.stderr }).toEqual({ status: 0, stderr: '' });
  expect(result.stdout.trim().split('\n')).toHaveLength(1);
  expect(JSON.parse(result.stdout)).toMatchObject({ completed: 4, total_output_tokens: 16 });
});

test('under mpirun, the other ranks need --engine', () => {
  const result = mpirunKiln(['generate', '--prompt', 'x', '--max-tokens', '1'], 60_000);
  expect(result.status).not.toBe(0);
  expect(result.stderr).toMatch(/rank 1: under mpirun, give --engine <engine-dir> of a tensor\/pipeline-parallel engine/);
});

async function freePort(): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const probe = net.createServer().on('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

/**
 * Starts `kiln serve --engine <engineDir>` (through `launcher`, e.g. mpirun and its flags), waits for
 * /health, returns its greedy completion, then stops it (SIGTERM; mpirun forwards it to every rank).
 */
async function completionFrom(launcher: string[], engineDir: string): Promise<Record<string, unknown>> {
  const port = await freePort();
  const [command, ...launcherArgs] = [...launcher, process.execPath];
  const args = [...launcherArgs, kilnBin, 'serve', '--engine', engineDir, '--model-name', 'scribe-7m', '--port', String(port), '--quiet', '--threads', '1'];
  const server: ChildProcess = spawn(command, args, { env, stdio: 'ignore' });
  const exited = new Promise((resolve) => server.once('exit', resolve));
  try {
    const url = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (await fetch(`${url}/health`).then((r) => r.ok, () => false)) break;
      if (Date.now() > deadline || server.exitCode !== null) throw new Error(`kiln serve did not come up on ${url}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    const response = await fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'scribe-7m', prompt: 'And the LORD said unto Moses,', max_tokens: 16, temperature: 0 }),
    });
    expect(response.status).toBe(200);
    return (await response.json()) as Record<string, unknown>;
  } finally {
    server.kill('SIGTERM');
    const timer = setTimeout(() => server.kill('SIGKILL'), 30_000);
    await exited;
    clearTimeout(timer);
  }
}

test('kiln serve under mpirun answers an OpenAI completion identical to the single-rank server\'s', async () => {
  const reference = await completionFrom([], singleEngine);
  const parallel = await completionFrom(['mpirun', ...MPIRUN], tpEngine);
  // Everything but the request's id and creation time.
  const answer = (c: Record<string, unknown>) => ({ object: c.object, model: c.model, choices: c.choices, usage: c.usage });
  expect(answer(parallel)).toEqual(answer(reference));
  expect((parallel.choices as Array<{ text: string }>)[0].text.length).toBeGreaterThan(0);
}, 180_000);
