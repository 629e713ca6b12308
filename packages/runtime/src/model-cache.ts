// The one-call path from "a model" to an engine folder: an engine folder as it is, a Hugging Face model
// folder or a Hub id converted and built once into the engine cache, nothing for the built-in model.
// `LLM.load` and the `kiln` command both go through `resolveModel`.
import { createHash } from 'node:crypto';
import { promises as fs, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildEngine, resolveModelBuildConfig, type BuildConfig } from '@kiln/builder';
import { convertCheckpoint } from '@kiln/convert';
import { downloadModel, isHubModelId, withFileLock, type DownloadProgress } from '@kiln/hub';
import { scribe7mPath } from '@kiln/scribe-7m';
import { ENGINE_DIR_FORMAT } from './engine-config';

/** What is happening on a first use: each stage reports a message, and done/total where it knows them. */
export interface LoadProgress {
  stage: 'download' | 'wait' | 'convert' | 'build';
  message: string;
  /** Bytes (download) or tensors (convert) so far. */
  done?: number;
  total?: number;
}

export interface ResolveModelOptions {
  /**
   * Build settings for a model folder or Hub id (BuildConfig: target, dtype, maxBatchSize, maxSeqLen,
   * maxNumTokens, gatherContextLogits, maxBeamWidth, tokensPerBlock, isa, computeCapability; each
   * documented there with its default and range). Default: none, i.e. the builder's defaults (a CPU
   * engine for this machine in the checkpoint's dtype). Part of the cache key once resolved, so `{}` and
   * `{ target: 'cpu', gatherContextLogits: false }` share one engine. Refused with an engine folder,
   * whose settings were fixed when it was built.
   */
  build?: Partial<BuildConfig>;
  /** Where engines are cached. Default: `defaultCacheDir()` (`$KILN_CACHE_DIR`, else the platform's cache folder). */
  cacheDir?: string;
  /** First-use progress: download, wait (another process builds the same engine), convert, build. Default: none. */
  onProgress?: (progress: LoadProgress) => void;
  /**
   * Hub ids: the access token for gated and private models. Default: `$HF_TOKEN`, else the token file of
   * `huggingface-cli login` (`$HF_HOME/token`).
   */
  token?: string;
  /** Hub ids: the Hub's URL. Default: `$HF_ENDPOINT`, else https://huggingface.co. */
  hubUrl?: string;
  /**
   * Hub ids: use only what is already downloaded (`$HF_HOME/hub`), making no request. Default:
   * `$HF_HUB_OFFLINE` (1, true, yes or on), else false; an unreachable Hub falls back to the cache too.
   */
  offline?: boolean;
  /** Stops a download when aborted (it resumes next time). Default: none. */
  signal?: AbortSignal;
}

/** What a source turned out to be. */
export type ModelSourceKind = 'engine' | 'folder' | 'hub' | 'builtin';

export interface ResolvedModel {
  /** The engine folder to load. */
  engineDir: string;
  /** True when an engine built earlier was reused (always true for an engine folder given as such). */
  cached: boolean;
  kind: ModelSourceKind;
  /** The Hugging Face model folder it was built from (a Hub snapshot for a Hub id); undefined for an engine folder. */
  modelDir?: string;
}

/** One engine of the cache, as `listEngineCache` reports it. */
export interface EngineCacheEntry {
  key: string;
  engineDir: string;
  /** Bytes on disk. */
  bytes: number;
  /** What it was built from: a folder, `hub:org/name@revision (commit)`, or `built-in scribe-7m`. */
  source: string;
  /** The resolved build settings. */
  buildConfig: BuildConfig | undefined;
  createdAt: Date;
  /** Last loaded through resolveModel / LLM.load. */
  lastUsedAt: Date;
}

/** Written into each cached engine folder next to the engine's own files. */
const CACHE_META = 'kiln-cache.json';

/**
 * The engine cache's folder: `$KILN_CACHE_DIR`, else the platform's cache folder: `$XDG_CACHE_HOME/kiln`
 * or `~/.cache/kiln` on Linux, `~/Library/Caches/kiln` on macOS, `%LOCALAPPDATA%\kiln\Cache` on Windows.
 */
export function defaultCacheDir(): string {
  if (process.env.KILN_CACHE_DIR) return path.resolve(process.env.KILN_CACHE_DIR);
  if (process.platform === 'darwin') return path.join(os.homedir(), 'Library', 'Caches', 'kiln');
  if (process.platform === 'win32') return path.join(process.env.LOCALAPPDATA ?? path.join(os.homedir(), 'AppData', 'Local'), 'kiln', 'Cache');
  if (process.env.XDG_CACHE_HOME) return path.join(path.resolve(process.env.XDG_CACHE_HOME), 'kiln');
  return path.join(os.homedir(), '.cache', 'kiln');
}

/** Versions of the packages whose code decides what an engine holds: a new one must not reuse old engines. */
function kilnVersions(): Record<string, string> {
  const names = ['@kiln/runtime', '@kiln/convert', '@kiln/builder', '@kiln/models', '@kiln/native'];
  return Object.fromEntries(names.map((name) => [name, (require(`${name}/package.json`) as { version: string }).version]));
}

/**
 * The cache key of a model folder built with `buildConfig` (resolved: every default filled in): a hash of
 * config.json's bytes, the name, size and modification time of every other `.json` and `.safetensors`
 * file (weights, shard index, tokenizer, generation config: hashing gigabytes of weights on every run
 * would cost more than the generation; decision 0003 makes the same trade), the resolved build config
 * (which names the target: this CPU's ISA, or a cuda compute capability) and Kiln's versions.
 */
async function cacheKey(modelDir: string, buildConfig: BuildConfig): Promise<string> {
  const hash = createHash('sha256');
  hash.update(await fs.readFile(path.join(modelDir, 'config.json')));
  const files: [string, number, number][] = [];
  for (const entry of (await fs.readdir(modelDir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    if (entry.name === 'config.json' || !/\.(json|safetensors|jinja)$/.test(entry.name)) continue;
    // stat, not the entry's type: the Hugging Face hub cache stores files as symlinks into its blobs.
    const stat = await fs.stat(path.join(modelDir, entry.name)).catch(() => undefined);
    if (stat?.isFile()) files.push([entry.name, stat.size, stat.mtimeMs]);
  }
  const sorted = Object.fromEntries(Object.entries(buildConfig).sort(([a], [b]) => (a < b ? -1 : 1)));
  hash.update(JSON.stringify({ files, buildConfig: sorted, versions: kilnVersions() }));
  return hash.digest('hex').slice(0, 32);
}

async function statOf(file: string) {
  return fs.stat(file).catch(() => undefined);
}

async function isKilnEngineDir(dir: string): Promise<boolean> {
  try {
    const config = JSON.parse(await fs.readFile(path.join(dir, 'config.json'), 'utf8')) as { format?: unknown };
    return config.format === ENGINE_DIR_FORMAT;
  } catch {
    return false;
  }
}

const SOURCE_FORMS = 'an engine folder, a Hugging Face model folder, or a Hub id org/name[@revision]';

/** Marks a cached engine as used now (`kiln cache clean --older-than` goes by it). */
async function touch(engineDir: string): Promise<void> {
  const now = new Date();
  await fs.utimes(path.join(engineDir, CACHE_META), now, now).catch(() => {});
}

/**
 * Finds or makes the engine of a model:
 * - `undefined`: the built-in scribe-7m (@kiln/scribe-7m), built into the cache on first use;
 * - an engine folder (`kiln build`'s output): used as it is;
 * - a Hugging Face model folder: converted (keeping the checkpoint's dtype; `build.dtype` is applied by
 *   the build) and built into `<cacheDir>/engines/<key>` once, with progress; later calls with the same
 *   folder and equivalent build settings reuse it;
 * - a Hub id `org/name[@revision]`: its files downloaded (@kiln/hub: resumable, into `$HF_HOME/hub`),
 *   then as a folder;
 * - a `.gguf` file: refused for now, saying so.
 * Several processes resolving the same new model at once build it once: one builds (under a lock file
 * in the cache, taken over if its holder dies) and the others wait, then reuse it; the engine folder
 * appears by an atomic rename, complete or not at all.
 */
export async function resolveModel(source?: string, options: ResolveModelOptions = {}): Promise<ResolvedModel> {
  let modelDir: string;
  let kind: ModelSourceKind;
  let origin: string;
  if (source === undefined) {
    modelDir = scribe7mPath;
    kind = 'builtin';
    origin = 'built-in scribe-7m';
  } else {
    if (typeof source !== 'string' || source === '') throw new TypeError(`the model must be ${SOURCE_FORMS}, got ${JSON.stringify(source)}`);
    const resolved = path.resolve(source);
    const stat = await statOf(resolved);
    if (source.toLowerCase().endsWith('.gguf') && !stat?.isDirectory()) {
      throw new Error(`${source}: GGUF import is not supported yet; give ${SOURCE_FORMS} (a folder with config.json and .safetensors weights)`);
    }
    if (stat?.isDirectory()) {
      if (await isKilnEngineDir(resolved)) {
        if (options.build !== undefined && Object.keys(options.build).length > 0) {
          throw new Error(`build options (${Object.keys(options.build).join(', ')}) apply to model folders and Hub ids; ${resolved} is an engine folder, built already`);
        }
        return { engineDir: resolved, cached: true, kind: 'engine' };
      }
      if (!(await statOf(path.join(resolved, 'config.json')))?.isFile()) {
        throw new Error(`${resolved} has no config.json: it is neither a Kiln engine folder nor a Hugging Face model folder`);
      }
      modelDir = resolved;
      kind = 'folder';
      origin = resolved;
    } else if (stat) {
      throw new Error(`${resolved} is a file; give ${SOURCE_FORMS}`);
    } else if (isHubModelId(source) && !/^\.{1,2}[\\/]/.test(source)) {
      const download = await downloadModel(source, {
        token: options.token,
        hubUrl: options.hubUrl,
        offline: options.offline,
        signal: options.signal,
        onProgress: (p: DownloadProgress) =>
          options.onProgress?.({ stage: 'download', message: `downloading ${source}: ${p.file} ${megabytes(p.bytes)}/${megabytes(p.totalBytes)} MB`, done: p.bytes, total: p.totalBytes }),
      });
      modelDir = download.dir;
      kind = 'hub';
      origin = `hub:${download.repo}@${download.revision} (${download.commit})`;
    } else {
      throw new Error(`${source} does not exist; give ${SOURCE_FORMS}`);
    }
  }

  const buildConfig = await resolveModelBuildConfig(modelDir, options.build ?? {});
  const key = await cacheKey(modelDir, buildConfig);
  const cacheDir = path.resolve(options.cacheDir ?? defaultCacheDir());
  const enginesDir = path.join(cacheDir, 'engines');
  const engineDir = path.join(enginesDir, key);
  const complete = async () => (await statOf(path.join(engineDir, 'config.json')))?.isFile() ?? false;
  if (await complete()) {
    await touch(engineDir);
    return { engineDir, cached: true, kind, modelDir };
  }

  const progress = options.onProgress ?? (() => {});
  await fs.mkdir(enginesDir, { recursive: true });
  const built = await withFileLock(
    path.join(enginesDir, `${key}.lock`),
    async () => {
      // Another process may have built it while this one waited.
      if (await complete()) return false;
      await fs.mkdir(path.join(cacheDir, 'tmp'), { recursive: true });
      const workDir = await fs.mkdtemp(path.join(cacheDir, 'tmp', `${key}-`));
      // An interrupted first use (Ctrl-C exits through process.exit, skipping `finally`) leaves no debris.
      const removeWorkDir = (): void => rmSync(workDir, { recursive: true, force: true });
      process.once('exit', removeWorkDir);
      try {
        const checkpointDir = path.join(workDir, 'checkpoint');
        const newEngine = path.join(workDir, 'engine');
        progress({ stage: 'convert', message: `first use of ${origin}: converting (cached in ${cacheDir})` });
        await convertCheckpoint({
          modelDir,
          outputDir: checkpointDir,
          onProgress: ({ done, total }) => progress({ stage: 'convert', message: `first use: converting ${done}/${total} tensors`, done, total }),
        });
        progress({ stage: 'build', message: 'first use: building the engine' });
        await buildEngine({
          checkpointDir,
          outputDir: newEngine,
          config: buildConfig,
          onProgress: ({ stage, message }) => progress({ stage: 'build', message: `first use: building: ${stage}: ${message}` }),
        });
        const meta = { source: origin, build: options.build ?? {}, buildConfig, createdAt: new Date().toISOString() };
        await fs.writeFile(path.join(newEngine, CACHE_META), `${JSON.stringify(meta, null, 2)}\n`);
        try {
          await fs.rename(newEngine, engineDir);
        } catch (error) {
          // Published by another process meanwhile (a lock taken over from a frozen holder): reuse it.
          if (!(await complete())) throw error;
          return false;
        }
        return true;
      } finally {
        process.off('exit', removeWorkDir);
        await fs.rm(workDir, { recursive: true, force: true });
      }
    },
    { signal: options.signal, onWait: () => progress({ stage: 'wait', message: `waiting for another process building the engine of ${origin}` }) },
  );
  if (!built) await touch(engineDir);
  return { engineDir, cached: !built, kind, modelDir };
}

function megabytes(bytes: number): string {
  return (bytes / 1e6).toFixed(1);
}

async function folderBytes(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await fs.readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) total += await folderBytes(full);
    else total += (await fs.lstat(full).catch(() => undefined))?.size ?? 0;
  }
  return total;
}

/** The engines in the cache, most recently used first, with their sizes and what they were built from. */
export async function listEngineCache(options: { cacheDir?: string } = {}): Promise<EngineCacheEntry[]> {
  const enginesDir = path.join(path.resolve(options.cacheDir ?? defaultCacheDir()), 'engines');
  const entries: EngineCacheEntry[] = [];
  for (const entry of await fs.readdir(enginesDir, { withFileTypes: true }).catch(() => [])) {
    if (!entry.isDirectory()) continue;
    const engineDir = path.join(enginesDir, entry.name);
    const metaPath = path.join(engineDir, CACHE_META);
    const stat = await statOf(metaPath);
    const meta = stat ? (JSON.parse(await fs.readFile(metaPath, 'utf8').catch(() => '{}')) as { source?: string; buildConfig?: BuildConfig; createdAt?: string }) : {};
    const dirStat = await statOf(engineDir);
    entries.push({
      key: entry.name,
      engineDir,
      bytes: await folderBytes(engineDir),
      source: meta.source ?? 'unknown (made by an older Kiln)',
      buildConfig: meta.buildConfig,
      createdAt: meta.createdAt ? new Date(meta.createdAt) : (dirStat?.mtime ?? new Date(0)),
      lastUsedAt: stat?.mtime ?? dirStat?.mtime ?? new Date(0),
    });
  }
  return entries.sort((a, b) => b.lastUsedAt.getTime() - a.lastUsedAt.getTime());
}

export interface CleanEngineCacheOptions {
  cacheDir?: string;
  /** Remove only engines not used for this many milliseconds. Default: remove every engine. */
  olderThanMs?: number;
}

/**
 * Removes cached engines (all, or those not used for `olderThanMs`), and the work folders that
 * interrupted builds left behind (those of builds still running are kept). Returns what was removed.
 */
export async function cleanEngineCache(options: CleanEngineCacheOptions = {}): Promise<{ removed: EngineCacheEntry[]; bytes: number }> {
  const cacheDir = path.resolve(options.cacheDir ?? defaultCacheDir());
  const cutoff = options.olderThanMs === undefined ? Infinity : Date.now() - options.olderThanMs;
  const removed: EngineCacheEntry[] = [];
  let bytes = 0;
  for (const entry of await listEngineCache({ cacheDir })) {
    if (entry.lastUsedAt.getTime() > cutoff) continue;
    // Renamed away first: a process loading it now finds it complete or not at all.
    const aside = path.join(cacheDir, 'tmp', `removed-${entry.key}-${process.pid}`);
    await fs.mkdir(path.dirname(aside), { recursive: true });
    if (!(await fs.rename(entry.engineDir, aside).then(() => true, () => false))) continue;
    await fs.rm(aside, { recursive: true, force: true });
    removed.push(entry);
    bytes += entry.bytes;
  }
  const tmpDir = path.join(cacheDir, 'tmp');
  for (const name of await fs.readdir(tmpDir).catch(() => [] as string[])) {
    const key = name.split('-')[0];
    const lock = await statOf(path.join(cacheDir, 'engines', `${key}.lock`));
    if (lock && Date.now() - lock.mtimeMs < 60_000) continue;  // a build in progress
    const full = path.join(tmpDir, name);
    bytes += await folderBytes(full);
    await fs.rm(full, { recursive: true, force: true });
  }
  return { removed, bytes };
}
