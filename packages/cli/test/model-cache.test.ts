// The command line and the library share one engine cache: `kiln generate --model` reuses what
// LLM.load built (one entry), `kiln pull` downloads from a Hub (here on 127.0.0.1), `kiln cache list`
// and `kiln cache clean` manage the cache. Runs the built `kiln` (packages/cli/dist).
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { listEngineCache, LLM } from '@kiln/runtime';
import { startFakeHub, type FakeHub } from '../../hub/test/hub-server';

const kilnBin = path.resolve(__dirname, '..', 'dist', 'bin', 'kiln.js');
const llamaFixture = path.resolve(__dirname, '..', '..', '..', 'fixtures', 'hf-tiny', 'llama');

let tmpDir: string;
let hub: FakeHub;
let env: NodeJS.ProcessEnv;

/** Runs kiln without blocking this process's event loop (the Hub answers from here). */
function kiln(...args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [kilnBin, ...args], { env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

beforeAll(async () => {
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-cli-cache-'));
  hub = await startFakeHub();
  const names = ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'];
  const files = new Map(names.map((n) => [n, fs.readFileSync(path.join(llamaFixture, n))]));
  hub.repos.set('kiln-test/tiny-llama', { files, refs: { main: 'd'.repeat(40) }, lfs: (f) => f.endsWith('.safetensors') });
  hub.repos.set('kiln-test/gated', { files, refs: { main: 'd'.repeat(40) }, lfs: (f) => f.endsWith('.safetensors'), gatedToken: 'hf_granted' });
  env = { ...process.env, KILN_CACHE_DIR: path.join(tmpDir, 'cache'), HF_HOME: path.join(tmpDir, 'hf'), HF_ENDPOINT: hub.url, KILN_CUDA: 'off' };
  delete env.HF_TOKEN;
  delete env.HF_HUB_OFFLINE;
});

afterAll(async () => {
  await hub.close();
  fs.rmSync(tmpDir, { recursive: true, force: true });
});

test('kiln generate --model reuses the engine LLM.load built: one cache entry', async () => {
  const llm = await LLM.load(llamaFixture, { cacheDir: env.KILN_CACHE_DIR, numThreads: 2 });
  const expected = (await llm.generate([1, 2, 3], { maxTokens: 4, ignoreEos: true })).outputIds;
  await llm.dispose();
  for (const extra of [[], ['--target', 'cpu']]) {
    const result = await kiln('generate', '--model', llamaFixture, '--input-ids', '1,2,3', '--max-tokens', '4', '--ignore-eos', '--json', ...extra);
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(JSON.parse(result.stdout).outputIds).toEqual(expected);
  }
  expect((await listEngineCache({ cacheDir: env.KILN_CACHE_DIR })).map((e) => e.source)).toEqual([llamaFixture]);
});

test('kiln pull downloads a Hub model; generate --model takes its id; errors name the cause', async () => {
  const pulled = await kiln('pull', 'kiln-test/tiny-llama');
  expect(pulled.status).toBe(0);
  const dir = path.join(env.HF_HOME as string, 'hub', 'models--kiln-test--tiny-llama', 'snapshots', 'd'.repeat(40));
  expect(pulled.stdout).toBe(`${dir}\n`);
  expect(pulled.stderr).toMatch(/^kiln pull: kiln-test\/tiny-llama@main \(dddddddddddd\): downloaded [\d.]+ kB, 5 files\n$/);
  expect(fs.readdirSync(dir).sort()).toEqual(['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
  const again = await kiln('pull', 'kiln-test/tiny-llama', '--offline');
  expect(again).toMatchObject({ status: 0, stdout: `${dir}\n` });
  expect(again.stderr).toContain('already downloaded');

  const generated = await kiln('generate', '--model', 'kiln-test/tiny-llama', '--input-ids', '1,2,3', '--max-tokens', '4', '--ignore-eos', '--json');
  expect(generated.status).toBe(0);
  expect(JSON.parse(generated.stdout).finishReason).toBe('length');

  const gated = await kiln('pull', 'kiln-test/gated');
  expect(gated.status).toBe(1);
  expect(gated.stderr).toContain('kiln pull: kiln-test/gated is a gated model');
  expect(gated.stderr).toContain('set HF_TOKEN');
  const missing = await kiln('generate', '--model', 'kiln-test/missing', '--prompt', 'x');
  expect(missing.status).toBe(1);
  expect(missing.stderr).toContain(`kiln generate: model kiln-test/missing was not found on ${hub.url}`);
  const gguf = await kiln('generate', '--model', 'model.Q4_0.gguf', '--prompt', 'x');
  expect(gguf.stderr).toContain('GGUF import is not supported yet');
});

test('kiln cache list shows sizes; kiln cache clean [--older-than] removes engines', async () => {
  const listed = await kiln('cache', 'list');
  expect(listed.status).toBe(0);
  const entries = await listEngineCache({ cacheDir: env.KILN_CACHE_DIR });
  expect(entries.length).toBe(2);  // the fixture folder, and the Hub snapshot
  expect(listed.stdout).toContain('ENGINE');
  for (const entry of entries) expect(listed.stdout).toContain(entry.key.slice(0, 12));
  expect(listed.stdout).toContain(`hub:kiln-test/tiny-llama@main (${'d'.repeat(40)})`);
  expect(listed.stdout).toMatch(new RegExp(`2 engines, [\\d.]+ [kM]B in ${env.KILN_CACHE_DIR}`));

  expect((await kiln('cache', 'clean', '--older-than', '7d')).stdout).toBe(`removed 0 engines, 0 B freed in ${env.KILN_CACHE_DIR}\n`);
  const bad = await kiln('cache', 'clean', '--older-than', 'soon');
  expect(bad).toMatchObject({ status: 1, stderr: 'kiln cache clean: --older-than: expected a duration such as 30d, 12h, 90m, 2w or 45s, got "soon"\n' });
  const cleaned = await kiln('cache', 'clean');
  expect(cleaned.stdout).toMatch(/^removed 2 engines, [\d.]+ [kM]B freed in /);
  expect((await kiln('cache', 'list')).stdout).toBe(`no engines in ${env.KILN_CACHE_DIR}\n`);
});
