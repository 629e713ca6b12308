import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** What a lock file holds: who took it. */
export interface LockHolder {
  pid: number;
  hostname: string;
  /** Milliseconds since the epoch. */
  since: number;
  /** Told apart from a later lock by the same process. */
  token: string;
}

export interface FileLockOptions {
  /**
   * A lock whose holder has not refreshed it (its file's modification time) for this long is taken
   * over: its process died without removing it. The holder refreshes it every staleMs / 4. Default
   * 30000 ms; at least 1000. A lock of a process of this machine that no longer runs is taken over at once.
   */
  staleMs?: number;
  /** How often a waiter looks again. Default 100 ms. */
  pollMs?: number;
  /** Called once, when another process holds the lock and this one starts waiting. Default: none. */
  onWait?: (holder: LockHolder | undefined) => void;
  /** Stops waiting (rejecting with the signal's reason) when aborted. Default: none. */
  signal?: AbortSignal;
}

function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function readHolder(lockPath: string): Promise<LockHolder | undefined> {
  try {
    const holder = JSON.parse(await fs.readFile(lockPath, 'utf8')) as LockHolder;
    return typeof holder.pid === 'number' && typeof holder.token === 'string' ? holder : undefined;
  } catch {
    return undefined;  // gone, or being written
  }
}

/**
 * Runs `work` while holding a lock file: one process at a time across processes (and within one).
 * The lock file is created exclusively (O_EXCL) and holds its holder's pid, host and a token; it is
 * refreshed while `work` runs and removed afterwards. A lock left by a process that died (a pid of this
 * host that no longer runs, or no refresh for `staleMs`) is taken over. Work that must stay correct even
 * if two holders ever overlap (a lock taken over from a process that was only frozen) should publish
 * its result with an atomic rename, as the engine cache and the downloads do.
 */
export async function withFileLock<T>(lockPath: string, work: () => Promise<T>, options: FileLockOptions = {}): Promise<T> {
  const staleMs = Math.max(options.staleMs ?? 30_000, 1000);
  const pollMs = options.pollMs ?? 100;
  await fs.mkdir(path.dirname(lockPath), { recursive: true });
  const holder: LockHolder = { pid: process.pid, hostname: os.hostname(), since: Date.now(), token: randomBytes(8).toString('hex') };
  let waited = false;
  for (;;) {
    options.signal?.throwIfAborted();
    try {
      await fs.writeFile(lockPath, JSON.stringify(holder), { flag: 'wx' });
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const [stat, current] = await Promise.all([fs.stat(lockPath).catch(() => undefined), readHolder(lockPath)]);
    if (!stat) continue;  // released meanwhile
    const dead = current !== undefined && current.hostname === os.hostname() && !processRuns(current.pid);
    if (dead || Date.now() - stat.mtimeMs > staleMs) {
      // Take it over: renamed away first, so that of several waiters only one removes it.
      const aside = `${lockPath}.stale-${holder.token}`;
      if (await fs.rename(lockPath, aside).then(() => true, () => false)) await fs.rm(aside, { force: true });
      continue;
    }
    if (!waited) {
      waited = true;
      options.onWait?.(current);
    }
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
  const refresh = setInterval(() => {
    const now = new Date();
    fs.utimes(lockPath, now, now).catch(() => {});
  }, staleMs / 4);
  refresh.unref();
  try {
    return await work();
  } finally {
    clearInterval(refresh);
    // Removed only while it is still ours (not taken over by a waiter that judged it stale).
    if ((await readHolder(lockPath))?.token === holder.token) await fs.rm(lockPath, { force: true });
  }
}
