// withFileLock: one holder at a time, and locks left by dead processes taken over.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { withFileLock, type LockHolder } from '@kiln/hub';

let dir: string;
let lock: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-lock-'));
  lock = path.join(dir, 'sub', 'x.lock');
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test('holders take turns, and the lock file is gone afterwards', async () => {
  const log: string[] = [];
  const work = (name: string) => async () => {
    log.push(`${name}+`);
    await sleep(30);
    log.push(`${name}-`);
    return name;
  };
  const results = await Promise.all([withFileLock(lock, work('a'), { pollMs: 5 }), withFileLock(lock, work('b'), { pollMs: 5 }), withFileLock(lock, work('c'), { pollMs: 5 })]);
  expect(results).toEqual(['a', 'b', 'c']);
  for (let i = 0; i < log.length; i += 2) expect(log[i + 1]).toBe(log[i].replace('+', '-'));  // never two inside
  expect(fs.existsSync(lock)).toBe(false);
});

test('a lock of a process of this machine that no longer runs is taken over at once', async () => {
  const dead = spawnSync(process.execPath, ['-e', '']).pid as number;
  fs.mkdirSync(path.dirname(lock), { recursive: true });
  fs.writeFileSync(lock, JSON.stringify({ pid: dead, hostname: os.hostname(), since: Date.now(), token: 'old' }));
  const waited: (LockHolder | undefined)[] = [];
  await expect(withFileLock(lock, async () => 'ran', { onWait: (holder) => waited.push(holder) })).resolves.toBe('ran');
  expect(waited).toEqual([]);
});

test('a lock not refreshed for staleMs is taken over; a fresh one is waited for', async () => {
  fs.mkdirSync(path.dirname(lock), { recursive: true });
  const other = { pid: 1, hostname: 'another-machine', since: Date.now(), token: 'other' };
  fs.writeFileSync(lock, JSON.stringify(other));
  const waited: (LockHolder | undefined)[] = [];
  let ran = false;
  const pending = withFileLock(lock, async () => (ran = true), { staleMs: 1000, pollMs: 10, onWait: (holder) => waited.push(holder) });
  await sleep(200);
  expect(ran).toBe(false);  // fresh: waited for
  expect(waited).toEqual([other]);
  const old = new Date(Date.now() - 60_000);
  fs.utimesSync(lock, old, old);  // its holder stopped refreshing it
  await pending;
  expect(ran).toBe(true);
});
