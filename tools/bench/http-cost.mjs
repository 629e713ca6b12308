// What a streamed token costs the Node main threads (issue 10: HTTP within 10% of in-process):
//   node tools/bench/http-cost.mjs --engine DIR [--num-requests 512] [--concurrency 64] [--server-flags "--cpu-prof"]
// starts `kiln serve --engine DIR` on 127.0.0.1, runs a warm-up `kiln bench --url` (64 requests), then the
// measured one (128 input / 128 output tokens), and prints one JSON line: output tok/s, and the server's
// and the bench client's main-thread CPU microseconds per output token (from /proc/<pid>/task/<pid>/
// schedstat, Linux only; the engine's own threads are not counted). The server's figure includes the
// executor's host work, which the in-process `kiln bench --engine` pays too.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { freePort, kilnBin } from './gpu/kiln-cli.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    engine: { type: 'string' },
    'num-requests': { type: 'string', default: '512' },
    concurrency: { type: 'string', default: '64' },
    'server-flags': { type: 'string', default: '' },
    'client-flags': { type: 'string', default: '' },
  },
});
if (!values.engine) throw new Error('usage: node tools/bench/http-cost.mjs --engine DIR [--num-requests N] [--concurrency C]');
const flags = (text) => text.split(' ').filter(Boolean);
const mainNs = (pid) => Number(fs.readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ')[0]);

const port = await freePort();
const url = `http://127.0.0.1:${port}`;
const server = spawn(process.execPath, [...flags(values['server-flags']), kilnBin, 'serve', '--engine', values.engine, '--host', '127.0.0.1', '--port', String(port)], { stdio: ['ignore', 'ignore', 'inherit'] });
const exited = new Promise((resolve) => server.on('exit', resolve));

function bench(numRequests) {
  return new Promise((resolve, reject) => {
    const args = [...flags(values['client-flags']), '-r', path.join(here, 'http-cost-preload.cjs'), kilnBin, 'bench', '--url', url,
      '--num-requests', String(numRequests), '--input-len', '128', '--output-len', '128', '--concurrency', values.concurrency, '--json'];
    const client = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    client.stdout.on('data', (d) => (stdout += d));
    client.stderr.on('data', (d) => (stderr += d));
    client.on('close', (code) => {
      if (code !== 0) return reject(new Error(`kiln bench --url exited ${code}: ${stderr.slice(-2000)}`));
      const clientNs = /KILN_HTTP_COST_CLIENT_MAIN_NS (\d+)/.exec(stderr);
      resolve({ result: JSON.parse(stdout.trim().split('\n').pop()), clientNs: clientNs ? Number(clientNs[1]) : NaN });
    });
  });
}

try {
  for (let ready = false; !ready;) {
    if (server.exitCode !== null) throw new Error(`kiln serve exited ${server.exitCode}`);
    ready = await fetch(`${url}/health`).then((r) => r.ok, () => false);
    if (!ready) await new Promise((r) => setTimeout(r, 200));
  }
  await bench(64);
  const before = mainNs(server.pid);
  const { result, clientNs } = await bench(Number(values['num-requests']));
  const serverNs = mainNs(server.pid) - before;
  const tokens = result.total_output_tokens;
  console.log(JSON.stringify({
    output_throughput: result.output_throughput,
    total_output_tokens: tokens,
    server_main_us_per_token: serverNs / 1e3 / tokens,
    client_main_us_per_token: clientNs / 1e3 / tokens,
    loadavg: fs.readFileSync('/proc/loadavg', 'utf8').trim(),
  }));
} finally {
  server.kill('SIGTERM');
  const timer = setTimeout(() => server.kill('SIGKILL'), 20_000);
  await exited;
  clearTimeout(timer);
}
