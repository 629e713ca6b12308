// Every example runs as a user would run it: `node examples/<name>/index.js`, in its own process,
// against the built packages (dist/), and its output is checked.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const EXAMPLES = path.resolve(__dirname, '..');
let work: string;

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-examples-'));
});
afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

function run(name: string, ...args: string[]): string {
  const result = spawnSync(process.execPath, [path.join(EXAMPLES, name, 'index.js'), ...args], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`${name} exited ${result.status}:\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}

test('custom-network: a @kiln/core network, weights from safetensors, built and run', () => {
  expect(run('custom-network', path.join(work, 'custom-network'))).toContain('generated: 4 5 6 7 8 9 10 11');
});

test('pipeline: convert, build, executor streaming with one request cancelled', () => {
  const out = run('pipeline', path.join(work, 'pipeline'));
  expect(out).toMatch(/^full: "And the LORD said unto Moses, .*" \[length, 24 tokens\]$/m);
  const cancelled = /^cancelled: "In the beginning.*" \[cancelled, (\d+) tokens\]$/m.exec(out);
  expect(cancelled).not.toBeNull();
  expect(Number(cancelled![1])).toBeGreaterThanOrEqual(4);
  expect(Number(cancelled![1])).toBeLessThan(200);
  expect(out).toMatch(/KV blocks in use after both: 0 of \d+/);
});

test('outside-architecture: a plugin package registers its architecture, and its model runs', () => {
  const model = path.join(EXAMPLES, '..', 'packages', 'model-example', 'fixtures', 'tiny_llama');
  const reference = JSON.parse(fs.readFileSync(path.join(model, 'reference.json'), 'utf8'));
  const out = run('outside-architecture', model, path.join(work, 'cache'));
  expect(out).toContain('registered: true');
  expect(out).toContain(`greedy: ${reference.prompts[0].greedy.join(' ')}`);
});

describe('fastify-app: Kiln inside an existing fastify application', () => {
  let child: ChildProcess;
  let url: string;
  beforeAll(async () => {
    child = spawn(process.execPath, [path.join(EXAMPLES, 'fastify-app', 'index.js'), '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
    url = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (chunk: Buffer) => {
        out += chunk.toString();
        const match = /listening on (\S+)/.exec(out);
        if (match) resolve(match[1]);
      });
      child.once('exit', (code) => reject(new Error(`exited ${code}: ${out}`)));
    });
  });
  afterAll(async () => {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  });

  test("the app's own route uses the model", async () => {
    const response = await fetch(`${url}/api/haiku?topic=bread`);
    expect(response.status).toBe(200);
    const body = (await response.json()) as { topic: string; text: string };
    expect(body.topic).toBe('bread');
    expect(body.text.length).toBeGreaterThan(0);
  });

  test("Kiln's OpenAI route streams through the app", async () => {
    const response = await fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'scribe-7m', prompt: 'In the beginning', max_tokens: 8, temperature: 0, stream: true }),
    });
    expect(response.status).toBe(200);
    const text = await response.text();
    expect(text).toContain('"object":"text_completion"');
    expect(text.trim().endsWith('data: [DONE]')).toBe(true);
  });

  test("Kiln's validation answers through the app", async () => {
    const response = await fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'scribe-7m', prompt: 'x', max_tokens: -1 }),
    });
    expect(response.status).toBe(400);
  });
});
