import { randomBytes } from 'node:crypto';
import { mkdirSync, promises as fs, rmSync } from 'node:fs';
import * as path from 'node:path';
import { ConvertError } from './errors';

function suffix(): string {
  return `${process.pid}-${randomBytes(4).toString('hex')}`;
}

// ---- Temporary folders beside an output, and their cleanup -----------------------------------------
// A conversion or build writes `<out>.tmp-<pid>-<random>/` and renames it into place. Interrupted, it
// must not leave that behind (a build's is ~0.5 GB per try): the folders of this process are removed
// when it exits (process.exit, which the CLI turns SIGINT and SIGTERM into), and folders whose process
// is dead (SIGKILL, a crash, a power cut) are removed by the next run writing the same output.

const liveTempDirs = new Set<string>();
let exitHookInstalled = false;

function removeLiveTempDirs(): void {
  for (const dir of liveTempDirs) {
    try {
      rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
    } catch {
      // Exiting: nothing more to do; the next run's stale cleanup takes what is left.
    }
  }
  liveTempDirs.clear();
}

/** Whether a process with this id is running (a process we may not signal is running too). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes `<target>.tmp-<pid>-<hex>` and `<target>.old-<pid>-<hex>` folders left by processes that are
 * no longer running. Folders of live processes (another conversion of the same output, running now)
 * are left alone. Returns the folders removed.
 */
export async function removeStaleTempDirs(target: string): Promise<string[]> {
  const resolved = path.resolve(target);
  const parent = path.dirname(resolved);
  const base = path.basename(resolved);
  let entries: string[];
  try {
    entries = await fs.readdir(parent);
  } catch {
    return [];  // no parent yet: nothing stale
  }
  const removed: string[] = [];
  for (const entry of entries) {
    if (!entry.startsWith(`${base}.`)) continue;
    const match = /^\.(tmp|old)-([0-9]+)-[0-9a-f]{8}$/.exec(entry.slice(base.length));
    if (!match) continue;
    const pid = Number(match[2]);
    if (pid === process.pid || processAlive(pid)) continue;
    const dir = path.join(parent, entry);
    await fs.rm(dir, { recursive: true, force: true });
    removed.push(dir);
  }
  return removed;
}

/**
 * Creates `<target>.tmp-<pid>-<random>/` (after removing stale ones of dead processes), removed if the
 * process exits before `release()`; call `release()` once the folder was renamed into place or removed.
 */
export async function createTempDirBeside(target: string): Promise<{ dir: string; release(): void }> {
  const resolved = path.resolve(target);
  await removeStaleTempDirs(resolved);
  await fs.mkdir(path.dirname(resolved), { recursive: true });
  const dir = `${resolved}.tmp-${suffix()}`;
  if (!exitHookInstalled) {
    // `exit` listeners must be synchronous; this covers process.exit() from a signal handler mid-write.
    process.on('exit', removeLiveTempDirs);
    exitHookInstalled = true;
  }
  // Registered, then created synchronously: a signal handled between an asynchronous mkdir and its
  // registration would leave the folder behind.
  liveTempDirs.add(dir);
  try {
    mkdirSync(dir);
  } catch (error) {
    liveTempDirs.delete(dir);
    throw error;
  }
  return { dir, release: () => void liveTempDirs.delete(dir) };
}

/** Whether `dir` holds a Kiln checkpoint (its config.json says so); unreadable or foreign means no. */
async function isKilnCheckpointDir(dir: string): Promise<boolean> {
  try {
    const config = JSON.parse(await fs.readFile(path.join(dir, 'config.json'), 'utf8')) as { format?: unknown };
    return config?.format === 'kiln-checkpoint';
  } catch {
    return false;
  }
}

/**
 * `outputDir` may be replaced when it does not exist, is an empty folder, or is an earlier Kiln checkpoint.
 * Anything else (the model folder itself, a home directory given by mistake) is refused: replacing a
 * folder deletes what was there.
 */
export async function assertReplaceable(outputDir: string): Promise<void> {
  let stat;
  try {
    stat = await fs.lstat(outputDir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new ConvertError(outputDir, `cannot check the output folder: ${(error as Error).message}`);
  }
  if (!stat.isDirectory()) throw new ConvertError(outputDir, 'exists and is not a folder; refusing to replace it');
  if ((await fs.readdir(outputDir)).length === 0) return;
  if (!(await isKilnCheckpointDir(outputDir))) {
    throw new ConvertError(
      outputDir,
      'exists and is not a Kiln checkpoint; refusing to replace it (remove it or choose another output folder)',
    );
  }
}

/**
 * Creates `outputDir` with `fill`, atomically: `fill` writes into a temporary folder beside it
 * (`<outputDir>.tmp-<pid>-<random>`, same filesystem so rename is atomic), which then takes the place of
 * `outputDir`; an earlier `outputDir` is renamed aside first and deleted after. On any failure, and if
 * the process exits midway, the temporary folder is removed: nothing half-written is left at `outputDir`.
 */
export async function writeDirAtomically(outputDir: string, fill: (tmpDir: string) => Promise<void>): Promise<void> {
  const target = path.resolve(outputDir);
  await assertReplaceable(target);
  const tmp = await createTempDirBeside(target);
  try {
    await fill(tmp.dir);
    await replaceDir(tmp.dir, target);
  } catch (error) {
    await fs.rm(tmp.dir, { recursive: true, force: true });
    throw error;
  } finally {
    tmp.release();
  }
}

async function replaceDir(tmpDir: string, target: string): Promise<void> {
  // Checked again: the folder may have changed while the conversion ran.
  await assertReplaceable(target);
  let aside: string | undefined;
  try {
    await fs.lstat(target);
    aside = `${target}.old-${suffix()}`;
    await fs.rename(target, aside);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  try {
    await fs.rename(tmpDir, target);
  } catch (error) {
    if (aside) await fs.rename(aside, target).catch(() => undefined);
    throw new ConvertError(target, `cannot move the new folder into place: ${(error as Error).message}`);
  }
  if (aside) await fs.rm(aside, { recursive: true, force: true });
}
