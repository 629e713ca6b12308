// `kiln bench`: the workload and metric helpers on their own, then the built executable end to end on
// the built-in scribe-7m (converted and built into a temporary cache).
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { memoryRows, prometheusValue } from '../src/bench/memory';
import { computeMetrics, percentile } from '../src/bench/metrics';
import { makeWorkload } from '../src/bench/workload';

const kilnBin = path.resolve(__dirname, '..', 'dist', 'bin', 'kiln.js');

describe('workload and metrics', () => {
  test('the workload is seeded: same options, same prompts and arrivals', () => {
    const options = { numRequests: 200, inputLen: 5, outputLen: 3, vocabSize: 100, requestRate: 10, seed: 4 };
    const a = makeWorkload(options);
    expect(makeWorkload(options)).toEqual(a);
    expect(makeWorkload({ ...options, seed: 5 })).not.toEqual(a);
    expect(a.every((r) => r.inputIds.length === 5 && r.inputIds.every((id) => id >= 0 && id < 100) && r.maxTokens === 3)).toBe(true);
    // Poisson arrivals at 10 req/s: increasing times, mean gap near 0.1 s.
    for (let i = 1; i < a.length; i++) expect(a[i].arrivalS).toBeGreaterThanOrEqual(a[i - 1].arrivalS);
    expect(a[a.length - 1].arrivalS / a.length).toBeGreaterThan(0.07);
    expect(a[a.length - 1].arrivalS / a.length).toBeLessThan(0.13);
    expect(makeWorkload({ ...options, requestRate: undefined }).every((r) => r.arrivalS === 0)).toBe(true);
  });

  test('percentiles interpolate as numpy; metrics follow vLLM definitions', () => {
    expect(percentile([1, 2, 3, 4], 50)).toBe(2.5);
    expect(percentile([10], 99)).toBe(10);
    const m = computeMetrics({
      durationS: 2,
      timings: [
        { inputLen: 4, outputTokens: 3, ttftS: 0.1, latencyS: 0.3, itlS: [0.1, 0.1] },
        { inputLen: 4, outputTokens: 1, ttftS: 0.2, latencyS: 0.2, itlS: [] },
      ],
    });
    expect(m.request_throughput).toBe(1);
    expect(m.output_throughput).toBe(2);
    expect(m.total_token_throughput).toBe(6);
    expect(m.mean_ttft_ms).toBeCloseTo(150);
    expect(m.mean_tpot_ms).toBeCloseTo(100);  // (0.3 - 0.1) / 2; one-token requests have no TPOT
    expect(m.p99_itl_ms).toBeCloseTo(100);
  });

  test('memory: Prometheus samples are read by name; unknown figures are reported as unavailable', () => {
    const text = '# HELP kiln_kv_blocks_used x\n# TYPE kiln_kv_blocks_used gauge\nkiln_kv_blocks_used 12\nkiln_kv_blocks_used_extra 99\nkiln_kv_blocks_total{a="b"} 4096\n';
    expect(prometheusValue(text, 'kiln_kv_blocks_used')).toBe(12);
    expect(prometheusValue(text, 'kiln_kv_blocks_total')).toBe(4096);
    expect(prometheusValue(text, 'kiln_kv_blocks_free')).toBeUndefined();
    const http = memoryRows({ device: null, weightBytes: null, kvCacheBytes: null, kvBlocksTotal: 4096, kvBlockTokens: null, peakKvBlocksUsed: 12, peakSource: 'sampled' });
    expect(http).toEqual([
      ['Weights (MiB)', 'unavailable (not reported by the server)'],
      ['KV cache (MiB)', 'unavailable (not reported by the server)'],
      ['Peak KV blocks in use', '12 of 4096 (0.3%)'],
    ]);
    const local = memoryRows({ device: 'cuda', weightBytes: 3 * 2 ** 20, kvCacheBytes: 2 ** 30, kvBlocksTotal: 64, kvBlockTokens: 16, peakKvBlocksUsed: 16, peakSource: 'every executor iteration' });
    expect(local).toContainEqual(['Weights (MiB)', '3.00']);
    expect(local).toContainEqual(['KV cache (MiB)', '1024.00']);
    expect(local).toContainEqual(['Peak KV blocks in use', '16 of 64 (25.0%)']);
    expect(local).toContainEqual(['Peak KV tokens in use', '256']);
  });
});

describe('kiln bench', () => {
  let workDir: string;
  let env: NodeJS.ProcessEnv;
  const kiln = (...args: string[]): SpawnSyncReturns<string> =>
    spawnSync(process.execPath, [kilnBin, 'bench', ...args], { env, encoding: 'utf8', timeout: 300_000 });

  beforeAll(() => {
    if (!fs.existsSync(kilnBin)) throw new Error(`${kilnBin} is missing: build with \`npx tsc -b tsconfig.build.json\` first`);
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-'));
    env = { ...process.env, KILN_CACHE_DIR: path.join(workDir, 'cache') };
  });
  afterAll(() => fs.rmSync(workDir, { recursive: true, force: true }));

  test('--warmup runs requests first that the metrics leave out; a bad count is refused', () => {
    const result = kiln('--num-requests', '4', '--warmup', '6', '--input-len', '8', '--output-len', '4', '--concurrency', '2', '--json');
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    const m = JSON.parse(result.stdout.trim()) as Record<string, number | string>;
    expect(m).toMatchObject({ num_requests: 4, completed: 4, total_input_tokens: 32, total_output_tokens: 16 });
    const bad = kiln('--num-requests', '4', '--warmup', '-1');
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/--warmup/);
  });

  test('--json prints one object with the serving metrics', () => {
    const result = kiln('--num-requests', '8', '--input-len', '16', '--output-len', '8', '--concurrency', '4', '--json');
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    const lines = result.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(1);
    const m = JSON.parse(lines[0]) as Record<string, number | string>;
    expect(m).toMatchObject({ num_requests: 8, input_len: 16, output_len: 8, max_concurrency: 4, completed: 8, total_input_tokens: 128, total_output_tokens: 64 });
    for (const key of ['request_throughput', 'output_throughput', 'mean_ttft_ms', 'mean_tpot_ms', 'mean_itl_ms']) expect(m[key]).toBeGreaterThan(0);
    // Memory: the engine's weights and KV cache, and the most KV blocks in use during the run: 4 requests
    // of 16 + 8 tokens in flight at once hold ceil(24 / tokens per block) blocks each.
    expect(m).toMatchObject({ memory_device: 'cpu', peak_kv_blocks_used_source: 'every executor iteration' });
    for (const key of ['weight_bytes', 'kv_cache_bytes', 'kv_blocks_total', 'kv_block_tokens']) expect(m[key]).toBeGreaterThan(0);
    const perRequest = Math.ceil(24 / (m.kv_block_tokens as number));
    expect(m.peak_kv_blocks_used).toBeGreaterThanOrEqual(perRequest);
    expect(m.peak_kv_blocks_used).toBeLessThanOrEqual(4 * perRequest);
    for (const name of ['ttft', 'tpot', 'itl', 'e2el']) {
      expect(m[`median_${name}_ms`]).toBe(m[`p50_${name}_ms`]);
      expect(m[`p90_${name}_ms`]).toBeGreaterThanOrEqual(m[`p50_${name}_ms`] as number);
      expect(m[`p99_${name}_ms`]).toBeGreaterThanOrEqual(m[`p90_${name}_ms`] as number);
    }
  });

  test('Poisson arrivals and the table', () => {
    const result = kiln('--num-requests', '6', '--input-len', '8', '--output-len', '4', '--request-rate', '200', '--seed', '3');
    expect(result.status).toBe(0);
    expect(result.stdout).toMatch(/Request throughput \(req\/s\)\s+\d/);
    expect(result.stdout).toMatch(/Output token throughput \(tok\/s\)\s+\d/);
    expect(result.stdout).toMatch(/P99 ITL \(ms\)\s+\d/);
    expect(result.stdout).toMatch(/Successful requests\s+6/);
    expect(result.stdout).toMatch(/-Memory \(cpu\)-/);
    expect(result.stdout).toMatch(/Weights \(MiB\)\s+\d+\.\d\d\n/);
    expect(result.stdout).toMatch(/KV cache \(MiB\)\s+\d+\.\d\d\n/);
    expect(result.stdout).toMatch(/Peak KV blocks in use\s+[1-9]\d* of \d+ \(\d+\.\d%\)\n/);
  });

  test('--url: memory from the server\'s /metrics (KV blocks), the bytes unavailable over HTTP', async () => {
    const port = await new Promise<number>((resolve, reject) => {
      const probe = net.createServer().on('error', reject);
      probe.listen(0, '127.0.0.1', () => {
        const { port: free } = probe.address() as net.AddressInfo;
        probe.close(() => resolve(free));
      });
    });
    const server = spawn(process.execPath, [kilnBin, 'serve', '--port', String(port), '--quiet'], { env, stdio: 'ignore' });
    try {
      const url = `http://127.0.0.1:${port}`;
      const deadline = Date.now() + 240_000;
      for (;;) {
        const ready = await fetch(`${url}/health`).then((r) => r.ok, () => false);
        if (ready) break;
        if (Date.now() > deadline || server.exitCode !== null) throw new Error(`kiln serve did not come up on ${url}`);
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      const result = await new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, [kilnBin, 'bench', '--url', url, '--num-requests', '8', '--input-len', '16', '--output-len', '8', '--concurrency', '4', '--json'], { env });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d) => (stdout += d));
        child.stderr.on('data', (d) => (stderr += d));
        child.on('close', (status) => resolve({ status, stdout, stderr }));
      });
      expect(result.stderr).toBe('');
      expect(result.status).toBe(0);
      const m = JSON.parse(result.stdout) as Record<string, number | string | null>;
      expect(m).toMatchObject({ completed: 8, total_output_tokens: 64, memory_device: null, weight_bytes: null, kv_cache_bytes: null, kv_block_tokens: null });
      expect(m.kv_blocks_total).toBeGreaterThan(0);
      expect(m.peak_kv_blocks_used).toBeGreaterThanOrEqual(0);
      expect(m.peak_kv_blocks_used).toBeLessThanOrEqual(m.kv_blocks_total as number);
      expect(m.peak_kv_blocks_used_source).toMatch(/^the server's \/metrics, sampled every 250 ms \(\d+ samples\)$/);
    } finally {
      server.kill('SIGTERM');
      await new Promise((resolve) => (server.exitCode !== null ? resolve(null) : server.once('exit', resolve)));
    }
  }, 300_000);

  test('bad options fail before any model is loaded', () => {
    expect(kiln('--model', 'a', '--engine', 'b').stderr).toMatch(/--model or --engine, not both/);
    expect(kiln('--concurrency', '0').stderr).toMatch(/--concurrency/);
    expect(kiln('--request-rate', 'fast').stderr).toMatch(/--request-rate/);
  });
});
