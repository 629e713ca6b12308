// downloadModel against a Hub on 127.0.0.1 (test/hub-server.ts) serving the llama fixture in the Hub's
// URL layout: real HTTP through @huggingface/hub's client, the huggingface_hub cache layout on disk.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { downloadModel, filesToDownload, HubDownloadError, isHubModelId, parseHubModelId, type DownloadProgress } from '@kiln/hub';
import { sha256, startFakeHub, type FakeHub } from './hub-server';

const llamaFixture = path.resolve(__dirname, '..', '..', '..', 'fixtures', 'hf-tiny', 'llama');
const COMMIT = 'a'.repeat(40);
const V1 = 'b'.repeat(40);
const NEEDED = ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'];

let hub: FakeHub;
let home: string;
const savedEnv = { ...process.env };

function fixtureFiles(): Map<string, Buffer> {
  const files = new Map(NEEDED.map((name) => [name, fs.readFileSync(path.join(llamaFixture, name))]));
  // Files a conversion does not read: never requested.
  files.set('README.md', Buffer.from('# tiny llama\n'));
  files.set('pytorch_model.bin', Buffer.alloc(1000, 7));
  files.set('onnx/model.safetensors', Buffer.alloc(1000, 8));
  return files;
}

const isLfs = (file: string) => /\.(safetensors|bin)$/.test(file);

beforeAll(async () => {
  hub = await startFakeHub();
  hub.repos.set('kiln-test/tiny-llama', { files: fixtureFiles(), refs: { main: COMMIT, v1: V1 }, lfs: isLfs });
  hub.repos.set('kiln-test/gated', { files: fixtureFiles(), refs: { main: COMMIT }, lfs: isLfs, gatedToken: 'hf_granted' });
  hub.repos.set('kiln-test/broken', { files: fixtureFiles(), refs: { main: COMMIT }, lfs: isLfs, unserved: ['special_tokens_map.json'] });
  const shard = (byte: number) => Buffer.alloc(3000, byte);
  hub.repos.set('kiln-test/sharded', {
    files: new Map([
      ['config.json', Buffer.from('{"architectures": ["LlamaForCausalLM"]}')],
      ['model.safetensors.index.json', Buffer.from(JSON.stringify({ weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' } }))],
      ['model-00001-of-00002.safetensors', shard(1)],
      ['model-00002-of-00002.safetensors', shard(2)],
      ['consolidated.safetensors', shard(3)],
    ]),
    refs: { main: COMMIT },
    lfs: isLfs,
  });
  hub.repos.set('kiln-test/pytorch-only', { files: new Map([['config.json', Buffer.from('{}')], ['pytorch_model.bin', Buffer.alloc(10)]]), refs: { main: COMMIT }, lfs: isLfs });
});

afterAll(async () => {
  await hub.close();
});

beforeEach(() => {
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-hub-'));
  process.env = { ...savedEnv, HF_HOME: home, HF_ENDPOINT: hub.url };
  for (const name of ['HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE', 'HF_HUB_OFFLINE', 'HF_TOKEN_PATH']) delete process.env[name];
  hub.requests.length = 0;
});

afterEach(() => {
  process.env = { ...savedEnv };
  fs.rmSync(home, { recursive: true, force: true });
});

const fileRequests = () => hub.requests.filter((r) => r.url.includes('/resolve/'));

describe('downloadModel', () => {
  test('downloads only what a conversion reads into $HF_HOME/hub, with progress, and not twice', async () => {
    const progress: DownloadProgress[] = [];
    const result = await downloadModel('kiln-test/tiny-llama', { onProgress: (p) => progress.push(p) });
    const storage = path.join(home, 'hub', 'models--kiln-test--tiny-llama');
    expect(result).toMatchObject({ repo: 'kiln-test/tiny-llama', revision: 'main', commit: COMMIT, dir: path.join(storage, 'snapshots', COMMIT), files: NEEDED, fromCache: false });
    for (const name of NEEDED) {
      const file = path.join(result.dir, name);
      expect(fs.lstatSync(file).isSymbolicLink()).toBe(true);  // huggingface_hub's layout: links into blobs/
      expect(fs.readFileSync(file).equals(fs.readFileSync(path.join(llamaFixture, name)))).toBe(true);
    }
    expect(fs.readFileSync(path.join(storage, 'refs', 'main'), 'utf8')).toBe(COMMIT);
    const weights = fs.statSync(path.join(llamaFixture, 'model.safetensors')).size;
    expect(fs.existsSync(path.join(storage, 'blobs', sha256(fs.readFileSync(path.join(llamaFixture, 'model.safetensors')))))).toBe(true);
    expect(fileRequests().some((r) => /README|pytorch|onnx/.test(r.url))).toBe(false);
    const total = NEEDED.reduce((sum, name) => sum + fs.statSync(path.join(llamaFixture, name)).size, 0);
    expect(result.downloadedBytes).toBe(total);
    // Progress per file, never going back, ending with every byte of each batch.
    const last = progress.filter((p) => p.file === 'model.safetensors').at(-1) as DownloadProgress;
    expect(last).toMatchObject({ fileBytes: weights, fileSize: weights, bytes: last.totalBytes });
    for (let i = 1; i < progress.length; i++) {
      if (progress[i].file === progress[i - 1].file) expect(progress[i].fileBytes).toBeGreaterThanOrEqual(progress[i - 1].fileBytes);
    }

    hub.requests.length = 0;
    const again = await downloadModel('kiln-test/tiny-llama');
    expect(again).toMatchObject({ dir: result.dir, downloadedBytes: 0 });
    expect(fileRequests()).toEqual([]);  // only the model info was asked for
  });

  test('a transfer cut in the middle resumes where it stopped, in the same call and in a later one', async () => {
    const weights = fs.readFileSync(path.join(llamaFixture, 'model.safetensors'));
    const half = Math.floor(weights.length / 2);
    // Within one call: the second attempt asks for the rest only.
    hub.cut.set('model.safetensors', half);
    const result = await downloadModel('kiln-test/tiny-llama');
    expect(fs.readFileSync(path.join(result.dir, 'model.safetensors')).equals(weights)).toBe(true);
    const transfers = fileRequests().filter((r) => r.url.endsWith('/model.safetensors') && r.range !== 'bytes=0-0');
    expect(transfers.map((r) => r.range)).toEqual([undefined, `bytes=${half}-${weights.length - 1}`]);

    // Across calls: one attempt only, so the first call fails and leaves the partial file.
    fs.rmSync(path.join(home, 'hub'), { recursive: true, force: true });
    hub.requests.length = 0;
    hub.cut.set('model.safetensors', 1000);
    const error = await downloadModel('kiln-test/tiny-llama', { attempts: 1 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HubDownloadError);
    expect((error as Error).message).toMatch(/the download of model\.safetensors was cut at 1000 of \d+ bytes .*run it again to resume/);
    const blobs = path.join(home, 'hub', 'models--kiln-test--tiny-llama', 'blobs');
    const partial = fs.readdirSync(blobs).find((name) => name.endsWith('.incomplete')) as string;
    expect(fs.statSync(path.join(blobs, partial)).size).toBe(1000);
    const progress: DownloadProgress[] = [];
    const resumed = await downloadModel('kiln-test/tiny-llama', { onProgress: (p) => progress.push(p) });
    expect(fs.readFileSync(path.join(resumed.dir, 'model.safetensors')).equals(weights)).toBe(true);
    expect(resumed.downloadedBytes).toBe(weights.length - 1000);
    expect(fileRequests().filter((r) => r.url.endsWith('/model.safetensors')).at(-1)?.range).toBe(`bytes=1000-${weights.length - 1}`);
    expect(progress.find((p) => p.file === 'model.safetensors')?.fileBytes).toBe(1000);  // progress starts from what was there
    expect(fs.readdirSync(blobs).some((name) => name.endsWith('.incomplete'))).toBe(false);
  });

  test('a file that does not match the Hub\'s hash is refused and deleted', async () => {
    hub.repos.set('kiln-test/corrupt', { files: fixtureFiles(), refs: { main: COMMIT }, lfs: isLfs, etags: { 'model.safetensors': 'f'.repeat(64) } });
    const error = await downloadModel('kiln-test/corrupt', { attempts: 2 }).catch((e: unknown) => e);
    expect((error as Error).message).toMatch(new RegExp(`model\\.safetensors does not match the Hub's hash \\(${'f'.repeat(64)}, got [0-9a-f]{64}\\); it was deleted`));
    const blobs = path.join(home, 'hub', 'models--kiln-test--corrupt', 'blobs');
    expect(fs.readdirSync(blobs).filter((name) => name.includes('f'.repeat(64)))).toEqual([]);
    // Downloaded twice (attempts: 2), from the start each time.
    expect(fileRequests().filter((r) => r.url.endsWith('/model.safetensors') && r.range !== 'bytes=0-0').map((r) => r.range)).toEqual([undefined, undefined]);
  });

  test('a revision: a tag resolves to its commit, recorded in refs/', async () => {
    const result = await downloadModel('kiln-test/tiny-llama@v1');
    expect(result).toMatchObject({ revision: 'v1', commit: V1 });
    expect(fs.readFileSync(path.join(home, 'hub', 'models--kiln-test--tiny-llama', 'refs', 'v1'), 'utf8')).toBe(V1);
    expect(fileRequests().every((r) => r.url.includes(`/resolve/${V1}/`))).toBe(true);  // files of that very commit
  });

  test('a gated model: 401 without a token, downloaded with HF_TOKEN', async () => {
    const error = await downloadModel('kiln-test/gated').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HubDownloadError);
    expect((error as HubDownloadError).statusCode).toBe(401);
    expect((error as Error).message).toBe(
      `kiln-test/gated is a gated model: accept its conditions on ${hub.url}/kiln-test/gated; no token was given: set HF_TOKEN to a token of an account with access (HTTP 401)`,
    );
    process.env.HF_TOKEN = 'hf_wrong';
    await expect(downloadModel('kiln-test/gated')).rejects.toThrow('the token given (HF_TOKEN) has no access to it (HTTP 401)');
    process.env.HF_TOKEN = 'hf_granted';
    const result = await downloadModel('kiln-test/gated');
    expect(result.files).toEqual(NEEDED);
    expect(hub.requests.filter((r) => r.url.includes('/resolve/')).every((r) => r.authorization === 'Bearer hf_granted')).toBe(true);
  });

  test('the token file of huggingface-cli login ($HF_HOME/token) is used when HF_TOKEN is not set', async () => {
    fs.writeFileSync(path.join(home, 'token'), 'hf_granted\n');
    await expect(downloadModel('kiln-test/gated')).resolves.toMatchObject({ repo: 'kiln-test/gated' });
  });

  test('clear errors for a missing repository, revision or file, and for a repository without safetensors', async () => {
    await expect(downloadModel('kiln-test/nope')).rejects.toThrow(`model kiln-test/nope was not found on ${hub.url} (if it is private, set HF_TOKEN) (HTTP 401)`);
    await expect(downloadModel('kiln-test/tiny-llama@nobranch')).rejects.toThrow('model kiln-test/tiny-llama has no revision "nobranch" (a branch, tag or commit) (HTTP 404)');
    await expect(downloadModel('kiln-test/broken')).rejects.toThrow('model kiln-test/broken@main has no file special_tokens_map.json, though the Hub listed it (HTTP 404)');
    await expect(downloadModel('kiln-test/pytorch-only')).rejects.toThrow('model kiln-test/pytorch-only@main has no .safetensors weights, the format Kiln converts (it has pytorch_model.bin)');
    await expect(downloadModel('not an id')).rejects.toThrow('"not an id" is not a Hugging Face model id: expected org/name or org/name@revision');
  });

  test('a sharded model: the index and the shards it names, nothing else', async () => {
    const result = await downloadModel('kiln-test/sharded');
    expect(result.files).toEqual(['config.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json']);
    expect(fileRequests().some((r) => r.url.endsWith('consolidated.safetensors'))).toBe(false);
  });

  test('offline mode uses the warm cache without a request, and says what is missing on a cold one', async () => {
    const online = await downloadModel('kiln-test/tiny-llama');
    hub.requests.length = 0;
    const offline = await downloadModel('kiln-test/tiny-llama', { offline: true });
    expect(offline).toMatchObject({ dir: online.dir, commit: COMMIT, files: NEEDED, fromCache: true, downloadedBytes: 0 });
    process.env.HF_HUB_OFFLINE = '1';
    expect((await downloadModel('kiln-test/tiny-llama@main')).dir).toBe(online.dir);
    expect(hub.requests).toEqual([]);
    await expect(downloadModel('kiln-test/tiny-llama@v1')).rejects.toThrow(
      `offline mode (HF_HUB_OFFLINE): kiln-test/tiny-llama@v1 is not complete in the Hugging Face cache: kiln-test/tiny-llama@v1 was never downloaded into ${path.join(home, 'hub')}; download it once online (kiln pull kiln-test/tiny-llama)`,
    );
    // A blob gone from the cache: the snapshot is not complete.
    fs.rmSync(fs.realpathSync(path.join(online.dir, 'model.safetensors')));
    await expect(downloadModel('kiln-test/tiny-llama')).rejects.toThrow('has no .safetensors weights');
  });

  test('an unreachable Hub falls back to a complete snapshot in the cache', async () => {
    const online = await downloadModel('kiln-test/tiny-llama');
    process.env.HF_ENDPOINT = 'http://127.0.0.1:1';  // nothing listens there
    await expect(downloadModel('kiln-test/tiny-llama')).resolves.toMatchObject({ dir: online.dir, fromCache: true });
    await expect(downloadModel('kiln-test/gated')).rejects.toThrow(/cannot reach http:\/\/127\.0\.0\.1:1 for kiln-test\/gated@main: .*HF_HUB_OFFLINE=1/);
  });

  test('HF_HUB_CACHE overrides $HF_HOME/hub; concurrent downloads of one model take turns', async () => {
    const cache = path.join(home, 'elsewhere');
    process.env.HF_HUB_CACHE = cache;
    const [a, b] = await Promise.all([downloadModel('kiln-test/tiny-llama'), downloadModel('kiln-test/tiny-llama')]);
    expect(a.dir).toBe(path.join(cache, 'models--kiln-test--tiny-llama', 'snapshots', COMMIT));
    expect(b.dir).toBe(a.dir);
    expect(a.downloadedBytes + b.downloadedBytes).toBe(NEEDED.reduce((sum, name) => sum + fs.statSync(path.join(llamaFixture, name)).size, 0));
    expect(fs.existsSync(path.join(home, 'hub'))).toBe(false);
  });
});

describe('model ids and file selection', () => {
  test.each([
    ['org/name', { repo: 'org/name', revision: 'main' }],
    ['meta-llama/Llama-3.2-1B@v1.0', { repo: 'meta-llama/Llama-3.2-1B', revision: 'v1.0' }],
    ['org/name@refs/pr/1', { repo: 'org/name', revision: 'refs/pr/1' }],
  ])('%s', (id, expected) => {
    expect(parseHubModelId(id)).toEqual(expected);
  });
  test.each(['name', './org/name', '/abs/path', 'org/name@', 'org/name@../x', 'a/b/c', 'org/na--me', 'model.gguf'])('%s is not an id', (text) => {
    expect(isHubModelId(text)).toBe(false);
  });
  test('filesToDownload keeps config, weights, tokenizer, generation config and chat template', () => {
    const repo = ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer.model', 'chat_template.jinja', 'generation_config.json', 'README.md', 'pytorch_model.bin', 'onnx/model.safetensors', '.gitattributes'];
    expect(filesToDownload(repo)).toEqual(['chat_template.jinja', 'config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer.model']);
  });
});
