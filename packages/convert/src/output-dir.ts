import { randomBytes } from 'node:crypto';
import { promises as fs, rmSync } from 'node:fs';
import * as path from 'node:path';
import { ConvertError } from './errors';

function suffix(): string {
  return `${process.pid}-${randomBytes(4).toString('hex')}`;
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
  await fs.mkdir(path.dirname(target), { recursive: true });
  const tmpDir = `${target}.tmp-${suffix()}`;
  await fs.mkdir(tmpDir);
  // `exit` listeners must be synchronous; this covers process.exit() from a signal handler mid-write.
  const removeOnExit = (): void => rmSync(tmpDir, { recursive: true, force: true });
  process.on('exit', removeOnExit);
  try {
    await fill(tmpDir);
    await replaceDir(tmpDir, target);
  } catch (error) {
    await fs.rm(tmpDir, { recursive: true, force: true });
    throw error;
  } finally {
    process.off('exit', removeOnExit);
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
