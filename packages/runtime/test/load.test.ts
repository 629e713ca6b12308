// LLM.load in one call: the built-in model, a Hugging Face model folder (converted and built once into
// the engine cache), an engine folder, a Hub id (against a Hub on 127.0.0.1), and the cache's rules:
// equivalent options share an engine, concurrent processes build it once, list and clean.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cleanEngineCache, defaultCacheDir, listEngineCache, LLM, resolveModel, type LoadProgress } from '@kiln/runtime';
import { scribe7mPath } from '@kiln/scribe-7m';
import { startFakeHub } from '../../hub/test/hub-server';

const llamaFixture = path.resolve(__dirname, '..', '..', '..', 'fixtures', 'hf-tiny', 'llama');
const llamaReference = JSON.parse(fs.readFileSync(path.join(llamaFixture, 'reference.json'), 'utf8')) as { prompts: { input_ids: number[]; greedy?: number[] }[] };
const scribeReference = JSON.parse(fs.readFileSync(path.join(scribe7mPath, 'reference.json'), 'utf8')) as { prompts: { input_ids: number[]; greedy: number[] }[] };

let tmpDir: string;
const savedEnv = { ...process.env };

beforeEach(() => {
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-load-'));
  process.env = { ...savedEnv, KILN_CACHE_DIR: path.join(tmpDir, 'cache'), HF_HOME: path.join(tmpDir, 'hf') };
  delete process.env.HF_TOKEN;
  delete process.env.HF_HUB_OFFLINE;
});

afterEach(() => {
  process.env = { ...savedEnv };
  fs.rmSync(tmpDir, { recursive: true, force: true });
});

const cacheDir = () => path.join(tmpDir, 'cache');

test('LLM.load() with no argument generates with the built-in model', async () => {
  const stages = new Set<string>();
  const llm = await LLM.load(undefined, { numThreads: 2, onProgress: (p) => stages.add(p.stage) });
  try {
    const { input_ids: prompt, greedy } = scribeReference.prompts[0];
    const result = await llm.generate(prompt, { maxTokens: 12, ignoreEos: true });
    expect(result.outputIds).toEqual(greedy.slice(0, 12));
    expect(result.text.length).toBeGreaterThan(0);
  } finally {
    await llm.dispose();
  }
  expect([...stages]).toEqual(['convert', 'build']);
  const entries = await listEngineCache();  // $KILN_CACHE_DIR
  expect(entries.map((e) => e.source)).toEqual(['built-in scribe-7m']);
  expect(entries[0].engineDir.startsWith(defaultCacheDir())).toBe(true);
});

test('a Hugging Face folder is converted and built once, with progress; equivalent options reuse that engine', async () => {
  const progress: LoadProgress[] = [];
  const llm = await LLM.load(llamaFixture, { numThreads: 2, onProgress: (p) => progress.push(p) });
  const prompt = llamaReference.prompts[0].input_ids;
  const first = await llm.generate(prompt, { maxTokens: 6, ignoreEos: true });
  await llm.dispose();
  expect(progress[0]).toMatchObject({ stage: 'convert', message: expect.stringContaining(`first use of ${llamaFixture}`) });
  expect(progress.some((p) => p.stage === 'convert' && p.total !== undefined && p.done === p.total && p.total > 0)).toBe(true);
  expect(progress.at(-1)?.stage).toBe('build');

  // The same folder with options that resolve to the same build: the same engine, no progress.
  for (const build of [{}, { gatherContextLogits: false }, { target: 'cpu' as const }, { dtype: 'float32' as const, maxBatchSize: 8 }]) {
    const again: LoadProgress[] = [];
    const resolved = await resolveModel(llamaFixture, { build, onProgress: (p) => again.push(p) });
    expect(resolved).toMatchObject({ cached: true, kind: 'folder', modelDir: llamaFixture });
    expect(again).toEqual([]);
  }
  const entries = await listEngineCache({ cacheDir: cacheDir() });
  expect(entries).toHaveLength(1);
  expect(entries[0]).toMatchObject({ source: llamaFixture, buildConfig: { target: 'cpu', maxBatchSize: 8, gatherContextLogits: false, dtype: 'float32' } });
  expect(entries[0].bytes).toBeGreaterThan(fs.statSync(path.join(llamaFixture, 'model.safetensors')).size / 2);

  // The cached engine generates the same tokens; other settings make a second engine.
  const reloaded = await LLM.load(llamaFixture, { build: { gatherContextLogits: false }, numThreads: 2 });
  expect((await reloaded.generate(prompt, { maxTokens: 6, ignoreEos: true })).outputIds).toEqual(first.outputIds);
  await reloaded.dispose();
  await expect(resolveModel(llamaFixture, { build: { maxBatchSize: 2 } })).resolves.toMatchObject({ cached: false });
  expect(await listEngineCache()).toHaveLength(2);
  expect(fs.readdirSync(path.join(cacheDir(), 'tmp'))).toEqual([]);  // no work folder left
});

test('an engine folder is used as it is; GGUF files and unknown paths are refused, saying why', async () => {
  const { engineDir } = await resolveModel(llamaFixture);
  await expect(resolveModel(engineDir)).resolves.toEqual({ engineDir, cached: true, kind: 'engine' });
  await expect(resolveModel(engineDir, { build: { maxBatchSize: 2 } })).rejects.toThrow(
    `build options (maxBatchSize) apply to model folders and Hub ids; ${engineDir} is an engine folder, built already`,
  );
  const gguf = path.join(tmpDir, 'model.Q4_K_M.gguf');
  fs.writeFileSync(gguf, 'GGUF');
  await expect(LLM.load(gguf)).rejects.toThrow(`${gguf}: GGUF import is not supported yet; give an engine folder, a Hugging Face model folder, or a Hub id org/name[@revision]`);
  await expect(LLM.load('missing.gguf')).rejects.toThrow('missing.gguf: GGUF import is not supported yet');
  await expect(LLM.load(path.join(tmpDir, 'nowhere'))).rejects.toThrow(`${path.join(tmpDir, 'nowhere')} does not exist; give an engine folder`);
  await expect(LLM.load(tmpDir)).rejects.toThrow(`${tmpDir} has no config.json: it is neither a Kiln engine folder nor a Hugging Face model folder`);
  await expect(LLM.load(llamaFixture, { build: { maxBatchSize: 0 } })).rejects.toThrow('maxBatchSize must be an integer in [1, 4096], got 0');
});

test('a Hub id is downloaded, built and cached; offline it loads from the caches', async () => {
  const hub = await startFakeHub();
  const commit = 'c'.repeat(40);
  const names = ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'];
  hub.repos.set('kiln-test/tiny-llama', { files: new Map(names.map((n) => [n, fs.readFileSync(path.join(llamaFixture, n))])), refs: { main: commit }, lfs: (f) => f.endsWith('.safetensors') });
  const prompt = llamaReference.prompts[1].input_ids;
  let expected: number[];
  try {
    const stages: string[] = [];
    const llm = await LLM.load('kiln-test/tiny-llama', { hubUrl: hub.url, numThreads: 2, onProgress: (p) => stages.push(p.stage) });
    expected = (await llm.generate(prompt, { maxTokens: 5, ignoreEos: true })).outputIds;
    await llm.dispose();
    expect(stages[0]).toBe('download');
    expect(stages).toContain('build');
    expect((await listEngineCache()).map((e) => e.source)).toEqual([`hub:kiln-test/tiny-llama@main (${commit})`]);
    // The same weights as the fixture folder: the same tokens.
    const local = await LLM.load(llamaFixture, { numThreads: 2 });
    expect((await local.generate(prompt, { maxTokens: 5, ignoreEos: true })).outputIds).toEqual(expected);
    await local.dispose();
  } finally {
    await hub.close();
  }
  // The Hub is gone: offline mode (or HF_HUB_OFFLINE) loads what is cached, with no download and no build.
  process.env.HF_HUB_OFFLINE = '1';
  const stages: string[] = [];
  const offline = await LLM.load('kiln-test/tiny-llama@main', { numThreads: 2, onProgress: (p) => stages.push(p.stage) });
  expect((await offline.generate(prompt, { maxTokens: 5, ignoreEos: true })).outputIds).toEqual(expected);
  await offline.dispose();
  expect(stages).toEqual([]);
  await expect(LLM.load('kiln-test/other')).rejects.toThrow('offline mode (HF_HUB_OFFLINE): kiln-test/other@main is not complete in the Hugging Face cache');
});

test('two processes loading the same new model at once end with one engine and no error', async () => {
  const runtimeDist = path.resolve(__dirname, '..', 'dist', 'index.js');
  const script = `
    const { LLM } = require(${JSON.stringify(runtimeDist)});
    (async () => {
      const stages = [];
      const llm = await LLM.load(process.argv[1], { numThreads: 1, onProgress: (p) => stages.includes(p.stage) || stages.push(p.stage) });
      const result = await llm.generate([1, 2, 3], { maxTokens: 4, ignoreEos: true });
      await llm.dispose();
      process.stdout.write(JSON.stringify({ engineDir: llm.engine.engineDir, stages, outputIds: result.outputIds }));
    })().catch((error) => { process.stderr.write(String(error && error.stack || error)); process.exit(1); });`;
  const run = () =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(process.execPath, ['-e', script, llamaFixture], { env: process.env });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });
  const results = await Promise.all([run(), run()]);
  for (const r of results) expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
  const [a, b] = results.map((r) => JSON.parse(r.stdout) as { engineDir: string; stages: string[]; outputIds: number[] });
  expect(a.engineDir).toBe(b.engineDir);
  expect(a.outputIds).toEqual(b.outputIds);
  // One built it; the other waited for it (or came after it was done) and built nothing.
  const builders = [a, b].filter((r) => r.stages.includes('build'));
  expect(builders).toHaveLength(1);
  expect([a, b].find((r) => !r.stages.includes('build'))?.stages.filter((s) => s !== 'wait')).toEqual([]);
  expect(fs.readdirSync(path.join(cacheDir(), 'engines')).sort()).toEqual([path.basename(a.engineDir)]);  // no lock file left
  expect(fs.readdirSync(path.join(cacheDir(), 'tmp'))).toEqual([]);
});

test('cache list and clean: sizes, last use, --older-than', async () => {
  const a = await resolveModel(llamaFixture);
  const b = await resolveModel(llamaFixture, { build: { maxBatchSize: 2 } });
  const old = new Date(Date.now() - 10 * 24 * 3600 * 1000);
  fs.utimesSync(path.join(a.engineDir, 'kiln-cache.json'), old, old);
  fs.mkdirSync(path.join(cacheDir(), 'tmp', 'deadbeef-abc123'), { recursive: true });  // left by a killed build
  const listed = await listEngineCache();
  expect(listed.map((e) => e.engineDir)).toEqual([b.engineDir, a.engineDir]);  // most recently used first
  expect(listed[1].lastUsedAt.getTime()).toBe(old.getTime());
  const cleaned = await cleanEngineCache({ olderThanMs: 24 * 3600 * 1000 });
  expect(cleaned.removed.map((e) => e.engineDir)).toEqual([a.engineDir]);
  expect(cleaned.bytes).toBe(listed[1].bytes);
  expect(fs.existsSync(a.engineDir)).toBe(false);
  expect(fs.readdirSync(path.join(cacheDir(), 'tmp'))).toEqual([]);
  // Using an engine makes it recent again.
  await resolveModel(llamaFixture, { build: { maxBatchSize: 2 } });
  expect((await cleanEngineCache({ olderThanMs: 24 * 3600 * 1000 })).removed).toEqual([]);
  expect((await cleanEngineCache()).removed.map((e) => e.engineDir)).toEqual([b.engineDir]);
  expect(await listEngineCache()).toEqual([]);
});
