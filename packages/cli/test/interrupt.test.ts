// Issue 16, clean interruption: `kiln convert` and `kiln build`, run as real child processes and sent
// SIGTERM or SIGINT while they write, exit with 143 / 130 and leave nothing behind (no output folder,
// no `<out>.tmp-*` or `<out>.old-*`). After SIGKILL their temporary folder stays, and the next run
// writing the same output removes it.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fs, watch } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const REPO = path.resolve(__dirname, '../../..');
const BIN = path.join(REPO, 'packages/cli/dist/bin/kiln.js');
const SCRIBE = path.join(REPO, 'packages/scribe-7m/model');
let root: string;
let checkpoint: string;

beforeAll(async () => {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: build with \`npx tsc -b tsconfig.build.json\` first`);
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-interrupt-'));
  checkpoint = path.join(root, 'checkpoint');
  const convert = spawnSync(process.execPath, [BIN, 'convert', '--model', SCRIBE, '--output', checkpoint, '--dtype', 'float32'], { encoding: 'utf8', timeout: 120_000 });
  expect(convert.stderr).toBe('');
  expect(convert.status).toBe(0);
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

let counter = 0;

/** What is left in `parent` of output `name`: the folder itself and its .tmp-/.old- siblings. */
async function leftovers(parent: string, name: string): Promise<string[]> {
  return (await fs.readdir(parent)).filter((entry) => entry === name || entry.startsWith(`${name}.`)).sort();
}

/**
 * Runs `kiln <args>` writing `<parent>/<name>`; as soon as its temporary folder appears (it is then
 * writing), sends `signal`. Resolves with the exit code, the signal it died of, and stderr.
 */
function interruptWhileWriting(args: string[], parent: string, name: string, signal: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string; sawTemp: boolean }> {
  return new Promise((resolve, reject) => {
    let sawTemp = false;
    let child: ChildProcess | undefined;
    const watcher = watch(parent, (_event, file) => {
      if (!sawTemp && typeof file === 'string' && file.startsWith(`${name}.tmp-`)) {
        sawTemp = true;
        child?.kill(signal);
      }
    });
    child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (data: Buffer) => (stderr += data.toString()));
    const timer = setTimeout(() => child?.kill('SIGKILL'), 120_000);
    child.on('error', reject);
    child.on('exit', (code, sig) => {
      clearTimeout(timer);
      watcher.close();
      resolve({ code, signal: sig, stderr, sawTemp });
    });
  });
}

describe.each([
  ['build', 'SIGTERM', 143],
  ['build', 'SIGINT', 130],
  ['convert', 'SIGTERM', 143],
  ['convert', 'SIGINT', 130],
] as const)('kiln %s interrupted by %s', (command, signal, exitCode) => {
  test(`exits ${exitCode} and leaves nothing behind`, async () => {
    const parent = path.join(root, `${command}-${signal}-${counter++}`);
    await fs.mkdir(parent);
    const output = path.join(parent, 'out');
    const args = command === 'build'
      ? ['build', '--checkpoint', checkpoint, '--output', output]
      : ['convert', '--model', SCRIBE, '--output', output, '--dtype', 'float32'];
    const result = await interruptWhileWriting(args, parent, 'out', signal);
    expect(result.sawTemp).toBe(true);
    expect({ code: result.code, signal: result.signal }).toEqual({ code: exitCode, signal: null });
    expect(result.stderr).toContain(`interrupted (${signal})`);
    expect(await leftovers(parent, 'out')).toEqual([]);
  });
});

test.each(['build', 'convert'] as const)('after SIGKILL, the next kiln %s removes the temporary folder left behind', async (command) => {
  const parent = path.join(root, `${command}-kill-${counter++}`);
  await fs.mkdir(parent);
  const output = path.join(parent, 'out');
  const args = command === 'build'
    ? ['build', '--checkpoint', checkpoint, '--output', output]
    : ['convert', '--model', SCRIBE, '--output', output, '--dtype', 'float32'];
  const killed = await interruptWhileWriting(args, parent, 'out', 'SIGKILL');
  expect(killed.signal).toBe('SIGKILL');
  const left = await leftovers(parent, 'out');
  expect(left.length).toBe(1);
  expect(left[0]).toMatch(/^out\.tmp-\d+-[0-9a-f]{8}$/);
  const again = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000 });
  expect(again.status).toBe(0);
  expect(await leftovers(parent, 'out')).toEqual(['out']);
});
