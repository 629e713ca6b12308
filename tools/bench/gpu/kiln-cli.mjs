// The kiln command as a user runs it: `kiln bench --engine … --json` (in-process executor) and
// `kiln serve --engine …` with `kiln bench --url …` against it, each a child process of this one.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const kilnBin = path.join(root, 'packages', 'cli', 'dist', 'bin', 'kiln.js');

/** Runs `node kiln.js ...args`; resolves with its stdout (stderr goes to ours), rejects on a non-zero exit. */
function runKiln(args, { timeoutMs = 240_000, env = {} } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [kilnBin, ...args], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
    let stdout = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (text) => (stdout += text));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(stdout);
      else reject(new Error(`kiln ${args.join(' ')} ${signal === 'SIGKILL' ? `was stopped after ${timeoutMs / 1000} s` : `exited ${code ?? signal}`}: ${stdout.slice(-2000)}`));
    });
  });
}

/**
 * `kiln bench … --json`: the one JSON object it prints (vLLM's metric names, plus the memory figures).
 * `env`: variables added to the command's environment (a kernel switch to compare).
 */
export async function kilnBench(source, workload, env = {}) {
  const args = ['bench', ...source];
  args.push('--num-requests', String(workload.numRequests), '--input-len', String(workload.inputLen), '--output-len', String(workload.outputLen));
  args.push('--concurrency', String(workload.concurrency), '--json');
  const stdout = await runKiln(args, { env });
  const line = stdout.trim().split('\n').pop();
  try {
    return { command: `kiln ${args.join(' ')}`, ...JSON.parse(line) };
  } catch {
    throw new Error(`kiln ${args.join(' ')} printed no JSON object: ${stdout.slice(-2000)}`);
  }
}

/** A port nothing listens on now (the kernel's pick for port 0), on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Starts `kiln serve --engine DIR` on 127.0.0.1:PORT (its log to logFile), waits until /health answers 200,
 * runs `fn(url)`, and always stops the server (SIGTERM, then SIGKILL after 20 s).
 */
export async function withServer(engineDir, logFile, fn, { readyTimeoutMs = 180_000 } = {}) {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const log = fs.openSync(logFile, 'w');
  const child = spawn(process.execPath, [kilnBin, 'serve', '--engine', engineDir, '--host', '127.0.0.1', '--port', String(port)], {
    stdio: ['ignore', log, log],
  });
  fs.closeSync(log);
  let exited = null;
  const exit = new Promise((resolve) => child.on('exit', (code, signal) => resolve((exited = { code, signal }))));
  const tail = () => {
    try {
      return fs.readFileSync(logFile, 'utf8').slice(-3000);
    } catch {
      return '';
    }
  };
  try {
    const deadline = Date.now() + readyTimeoutMs;
    for (;;) {
      if (exited) throw new Error(`kiln serve exited (${exited.code ?? exited.signal}) before it was ready:\n${tail()}`);
      try {
        const response = await fetch(`${url}/health`);
        if (response.status === 200) break;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`kiln serve did not answer ${url}/health within ${readyTimeoutMs / 1000} s:\n${tail()}`);
      await sleep(200);
    }
    return await fn(url);
  } finally {
    if (!exited) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await exit;
      clearTimeout(timer);
    }
  }
}
