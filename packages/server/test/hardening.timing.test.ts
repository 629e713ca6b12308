// Issue 16, timing and memory, through `kiln serve` in a child process (its event loop and resident
// memory are the server's alone): /health answers within 50 ms while oversized inputs are processed
// (they used to freeze the event loop for seconds while being tokenized), and slow readers keep the
// server's resident memory within 10% of a run with fast readers (it used to buffer whole streams).
// Loopback only; every loop is bounded in count and time. Runs alone in the `test:timing` phase.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { loadavg } from 'node:os';
import * as path from 'node:path';
import { buildTestEngines, metric, type TestEngines } from './helpers';

const kilnBin = path.resolve(__dirname, '..', '..', 'cli', 'dist', 'bin', 'kiln.js');
const PROMPT = 'And the LORD said unto Moses,';

// Timing on a shared machine: a failed attempt is retried twice (the errors are logged) before it counts.
jest.retryTimes(2, { logErrorsBeforeRetry: true });

describe('kiln serve under hostile input and slow clients (child process)', () => {
  let engines: TestEngines;
  let child: ChildProcess;
  let url: string;
  let stdout = '';

  beforeAll(async () => {
    if (!fs.existsSync(kilnBin)) throw new Error(`${kilnBin} is missing: build with \`npx tsc -b tsconfig.build.json\` first`);
    engines = await buildTestEngines({ maxBatchSize: 64 });
    child = spawn(process.execPath, [kilnBin, 'serve', '--engine', engines.engineDir, '--port', '0', '--model-name', 'scribe-7m', '--log-level', 'warn'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout?.on('data', (data: Buffer) => (stdout += data.toString()));
    url = await new Promise<string>((resolve, reject) => {
      let stderr = '';
      const timer = setTimeout(() => reject(new Error(`kiln serve did not start in 30 s: ${stderr}`)), 30_000);
      child.stderr?.on('data', (data: Buffer) => {
        stderr += data.toString();
        const match = /listening on (http:\/\/\S+)/.exec(stderr);
        if (match) {
          clearTimeout(timer);
          resolve(match[1]);
        }
      });
      child.once('exit', (code) => reject(new Error(`kiln serve exited with ${code}: ${stderr}`)));
    });
  });

  afterAll(async () => {
    if (child && child.exitCode === null) {
      const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      expect(await exited).toBe(0);
      clearTimeout(timer);
    }
    expect(stdout).not.toMatch(/"level":(50|60)/);
    await engines?.cleanup();
  });

  const post = (route: string, body: string) => fetch(`${url}${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  const rss = async () => metric(await (await fetch(`${url}/metrics`)).text(), 'process_resident_memory_bytes') as number;

  // Issue 16's "/health within 50 ms while oversized inputs are processed". It runs in CI's timing
  // phase, alone on the machine: on the 2-core development machine at rest (load average ~1) seven
  // runs gave maxima of 21 to 44.5 ms (medians 3 to 4 ms); the server's main thread is busy at most ~10
  // ms of CPU in a row during the burst (docs/hardening.md). Under other builds' load (7 to 9) the
  // machine's own scheduling noise alone reaches 14 to 43 ms, so a run is retried (retryTimes above)
  // before it fails.
  test('/health answers within 50 ms while oversized inputs are processed', async () => {
    // Warm-up: the first /health and the worker thread's start are not what is measured.
    await fetch(`${url}/health`);
    await post('/v1/completions', JSON.stringify({ model: 'scribe-7m', prompt: `${PROMPT} `.repeat(300), max_tokens: 1 }));
    // The oversized inputs of the report, sent all at once from another process (so that sending
    // 5 MB does not delay this process's probes): Triton bad_words as a string of 100k words, OpenAI
    // bad_words of 1,024 entries of ~900 bytes (twice), and a 1 MB prompt (twice).
    const sender = `
      const P = ${JSON.stringify(PROMPT)};
      const bodies = [
        ['/v2/models/scribe-7m/generate', { text_input: P, max_tokens: 4, bad_words: Array.from({ length: 100000 }, (_, i) => 'w' + i).join(',') }],
        ['/v1/completions', { model: 'scribe-7m', prompt: P, max_tokens: 4, bad_words: Array.from({ length: 1024 }, (_, i) => i + ' ' + 'x'.repeat(890)) }],
        ['/v1/completions', { model: 'scribe-7m', prompt: 'Amen, ye saints. '.repeat(61000), max_tokens: 4 }],
        ['/v1/completions', { model: 'scribe-7m', prompt: 'Amen, ye saints. '.repeat(61000), max_tokens: 4 }],
        ['/v1/completions', { model: 'scribe-7m', prompt: P, max_tokens: 4, bad_words: Array.from({ length: 1024 }, (_, i) => i + ' ' + 'x'.repeat(890)) }],
      ].map(([route, body]) => [route, JSON.stringify(body)]);
      if (!bodies.every(([, body]) => body.length < 1024 * 1024)) throw new Error('a body is past the 1 MiB limit');
      process.stdout.write('ready\\n');
      process.stdin.once('data', async () => {
        const statuses = await Promise.all(bodies.map(([route, body]) =>
          fetch(${JSON.stringify(url)} + route, { method: 'POST', headers: { 'content-type': 'application/json' }, body }).then((r) => r.status)));
        // Exit once written: an idle keep-alive socket would hold the process (and this test) open.
        process.stdout.write(JSON.stringify(statuses) + '\\n', () => process.exit(0));
      });`;
    const client = spawn(process.execPath, ['-e', sender], { stdio: ['pipe', 'pipe', 'inherit'] });
    let output = '';
    const lines = new Promise<string[]>((resolve, reject) => {
      client.stdout?.on('data', (data: Buffer) => (output += data.toString()));
      client.on('exit', (code) => (code === 0 ? resolve(output.trim().split('\n')) : reject(new Error(`the sender exited with ${code}`))));
    });
    let exited = false;
    void lines.catch(() => undefined).finally(() => (exited = true));
    for (let i = 0; i < 1500 && !output.includes('ready') && !exited; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(output).toContain('ready');
    let done = false;
    void lines.catch(() => undefined).finally(() => (done = true));
    await (await fetch(`${url}/metrics`)).text();  // resets the server's event-loop delay histogram
    const started = Date.now();
    client.stdin?.write('go\n');
    const latencies: number[] = [];
    while (!done || latencies.length < 10) {
      const t0 = performance.now();
      const response = await fetch(`${url}/health`);
      expect(response.status).toBe(200);
      await response.text();
      latencies.push(performance.now() - t0);
      await new Promise((resolve) => setTimeout(resolve, 10));
      if (Date.now() - started > 60_000) break;
    }
    const statuses = JSON.parse((await lines)[1]) as number[];
    const elapsed = Date.now() - started;
    const sorted = [...latencies].sort((a, b) => a - b);
    const lag = metric(await (await fetch(`${url}/metrics`)).text(), 'nodejs_eventloop_lag_max_seconds') as number;
    process.stderr.write(
      `oversized inputs: ${elapsed} ms, statuses ${statuses.join(' ')}; /health ${latencies.length} probes, max ${sorted[sorted.length - 1].toFixed(1)} ms, ` +
        `median ${sorted[sorted.length >> 1].toFixed(1)} ms; the server's event-loop delay max ${(lag * 1000).toFixed(1)} ms; load average ${loadavg()[0].toFixed(2)}\n`,
    );
    // 100k words: refused before tokenizing; the 1 MB prompts: longer than the context by their length
    // alone (never tokenized, never on the server's main heap); the bad words: tokenized on the worker
    // and refused as longer than 256 tokens each. Never a 5xx.
    expect(statuses).toEqual([400, 400, 400, 400, 400]);
    expect(sorted[sorted.length - 1]).toBeLessThan(50);
  });

  /**
   * 16 concurrent streams of 4 choices with logprobs (~3 MB of events each). A fast reader reads as it
   * comes; a slow one reads in bursts (50 ms of reading every 400 ms), far slower than generation.
   * Resolves with the peak of the server's resident memory sampled every 50 ms, and the streams' bytes.
   */
  async function run(slow: boolean): Promise<{ peak: number; bytes: number[] }> {
    const { hostname, port } = new URL(url);
    const payload = JSON.stringify({ model: 'scribe-7m', prompt: PROMPT, max_tokens: 480, temperature: 0.7, seed: 3, ignore_eos: true, logprobs: 20, n: 4, stream: true });
    let peak = 0;
    let running = true;
    const sampler = (async () => {
      while (running) {
        peak = Math.max(peak, await rss());
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })();
    const bytes = await Promise.all(
      Array.from({ length: 16 }, () => new Promise<number>((resolve, reject) => {
        const socket = net.connect(Number(port), hostname);
        let received = 0;
        let tail = '';
        let toggler: NodeJS.Timeout | undefined;
        socket.on('data', (data) => {
          received += data.length;
          tail = (tail + data.toString('latin1')).slice(-16);
          if (tail.endsWith('\r\n0\r\n\r\n')) socket.end();
        });
        socket.on('error', reject);
        socket.on('close', () => {
          clearInterval(toggler);
          resolve(received);
        });
        socket.write(['POST /v1/completions HTTP/1.1', `Host: ${hostname}:${port}`, 'Content-Type: application/json', `Content-Length: ${Buffer.byteLength(payload)}`, 'Connection: close', '', payload].join('\r\n'));
        if (slow) {
          let phase = 0;
          socket.pause();
          toggler = setInterval(() => {
            phase = (phase + 1) % 8;
            if (phase === 0) socket.resume();
            else if (phase === 1) socket.pause();
          }, 50);
        }
      })),
    );
    running = false;
    await sampler;
    return { peak, bytes };
  }

  test('slow readers keep resident memory within 10% of a fast-reader run', async () => {
    await run(false);  // warm-up: heaps, JIT code and the KV pool at their working size
    const fast = await run(false);
    const slow = await run(true);
    process.stderr.write(`peak RSS: fast readers ${(fast.peak / 2 ** 20).toFixed(1)} MiB, slow readers ${(slow.peak / 2 ** 20).toFixed(1)} MiB; stream bytes ${fast.bytes[0]} / ${slow.bytes[0]}\n`);
    // Every stream complete in both runs (same seed, same output size up to the chunk framing).
    for (const b of [...fast.bytes, ...slow.bytes]) expect(b).toBeGreaterThan(1_000_000);
    expect(slow.peak).toBeLessThan(fast.peak * 1.1);
    const text = await (await fetch(`${url}/metrics`)).text();
    expect(metric(text, 'kiln_kv_blocks_used')).toBe(0);
    expect(text).not.toMatch(/kiln_http_requests_total\{[^}]*status="5\d\d"\}/);
  });
});
