import { createHash } from 'node:crypto';
import { promises as fs, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildEngine, defaultComputeCapability, type BuildConfig } from '@kiln/builder';
import { convertCheckpoint } from '@kiln/convert';
import { hostTarget } from '@kiln/runtime';
import { scribe7mPath } from '@kiln/scribe-7m';

export interface ResolveModelOptions {
  /** A Hugging Face model folder. Default: the built-in scribe-7m (@kiln/scribe-7m). */
  modelDir?: string;
  /**
   * Build settings that differ from the builder's defaults (`target: 'cuda'`, `dtype`, limits); part of
   * the cache key. Default: none (a CPU engine in the model's dtype).
   */
  buildConfig?: Partial<BuildConfig>;
  /** Where engines are cached. Default: `defaultCacheDir()`. */
  cacheDir?: string;
  /** First-use progress (conversion and build steps), one line each. Default: none. */
  onProgress?: (message: string) => void;
}

export interface ResolvedModel {
  engineDir: string;
  /** True when an engine built earlier was reused. */
  cached: boolean;
}

/** `$KILN_CACHE_DIR`, else `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`. */
export function defaultCacheDir(): string {
  if (process.env.KILN_CACHE_DIR) return path.resolve(process.env.KILN_CACHE_DIR);
  if (process.env.XDG_CACHE_HOME) return path.join(path.resolve(process.env.XDG_CACHE_HOME), 'kiln');
  return path.join(os.homedir(), '.cache', 'kiln');
}

/** Versions of the packages whose code decides what an engine holds: a new one must not reuse old engines. */
function kilnVersions(): Record<string, string> {
  const names = ['@kiln/cli', '@kiln/convert', '@kiln/builder', '@kiln/models', '@kiln/native'];
  return Object.fromEntries(names.map((name) => [name, (require(`${name}/package.json`) as { version: string }).version]));
}

/**
 * The target an engine built here with `buildConfig` is for: this CPU's, or the compute capability a cuda
 * build gets (given, else GPU 0's), so a cache shared between machines never hands out an engine built
 * for another one.
 */
function cacheTarget(buildConfig: Partial<BuildConfig>): object {
  if (buildConfig.target !== 'cuda') return hostTarget();
  return { backend: 'cuda', computeCapability: buildConfig.computeCapability ?? defaultComputeCapability() };
}

/**
 * The cache key of a model folder built with `buildConfig`: a hash of config.json's bytes, the name,
 * size and modification time of every other `.json` and `.safetensors` file (weights, shard index,
 * tokenizer, generation config: hashing gigabytes of weights on every run would cost more than the
 * generation), the build config, the target this machine runs and Kiln's versions.
 */
async function cacheKey(modelDir: string, buildConfig: Partial<BuildConfig>): Promise<string> {
  const hash = createHash('sha256');
  const configPath = path.join(modelDir, 'config.json');
  try {
    hash.update(await fs.readFile(configPath));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new Error(code === 'ENOENT' ? `${configPath} is missing: ${modelDir} is not a Hugging Face model folder` : `${configPath}: ${(error as Error).message}`);
  }
  const files: [string, number, number][] = [];
  for (const entry of (await fs.readdir(modelDir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    if (entry.name === 'config.json' || !/\.(json|safetensors)$/.test(entry.name)) continue;
    // stat, not the entry's type: the Hugging Face hub cache stores files as symlinks into its blobs.
    const stat = await fs.stat(path.join(modelDir, entry.name)).catch(() => undefined);
    if (stat?.isFile()) files.push([entry.name, stat.size, stat.mtimeMs]);
  }
  // `target: "cpu"` is the default: the same engine as none given.
  const sortedConfig = Object.fromEntries(
    Object.entries(buildConfig)
      .filter(([name, value]) => !(name === 'target' && value === 'cpu'))
      .sort(([a], [b]) => (a < b ? -1 : 1)),
  );
  hash.update(JSON.stringify({ files, buildConfig: sortedConfig, target: cacheTarget(buildConfig), versions: kilnVersions() }));
  return hash.digest('hex').slice(0, 32);
}

async function isFile(file: string): Promise<boolean> {
  return (await fs.stat(file).catch(() => undefined))?.isFile() ?? false;
}

/**
 * Finds or makes the engine for a Hugging Face model folder: convert (keeping the checkpoint's dtype: the
 * kernels accumulate in float32 whatever the storage; a `buildConfig.dtype` is applied by the build) and
 * build into `<cacheDir>/engines/<key>`, once.
 * A later call with the same folder and build config reuses that engine.
 */
export async function resolveModel(options: ResolveModelOptions = {}): Promise<ResolvedModel> {
  const modelDir = path.resolve(options.modelDir ?? scribe7mPath);
  const stat = await fs.stat(modelDir).catch(() => undefined);
  if (!stat) throw new Error(`model folder ${modelDir} does not exist`);
  if (!stat.isDirectory()) throw new Error(`${modelDir} is not a folder (a Hugging Face model folder was expected)`);

  const buildConfig = options.buildConfig ?? {};
  const key = await cacheKey(modelDir, buildConfig);
  const cacheDir = options.cacheDir ?? defaultCacheDir();
  const engineDir = path.join(cacheDir, 'engines', key);
  // The builder writes the engine directory atomically: with its config.json there, it is complete.
  if (await isFile(path.join(engineDir, 'config.json'))) return { engineDir, cached: true };

  const progress = options.onProgress ?? (() => {});
  await fs.mkdir(path.join(cacheDir, 'tmp'), { recursive: true });
  const workDir = await fs.mkdtemp(path.join(cacheDir, 'tmp', `${key}-`));
  // An interrupted first use (Ctrl-C exits through process.exit, skipping `finally`) leaves no debris.
  const removeWorkDir = (): void => rmSync(workDir, { recursive: true, force: true });
  process.once('exit', removeWorkDir);
  try {
    const checkpointDir = path.join(workDir, 'checkpoint');
    progress(`first use of ${modelDir}: converting (cached in ${cacheDir})`);
    await convertCheckpoint({
      modelDir,
      outputDir: checkpointDir,
      onProgress: ({ done, total }) => progress(`first use: converting ${done}/${total} tensors`),
    });
    progress('first use: building the engine');
    await buildEngine({
      checkpointDir,
      outputDir: engineDir,
      config: buildConfig,
      onProgress: ({ stage, message }) => progress(`first use: building: ${stage}: ${message}`),
    });
  } finally {
    // The converted checkpoint is only an intermediate: the engine holds its own copy of the weights.
    process.off('exit', removeWorkDir);
    await fs.rm(workDir, { recursive: true, force: true });
  }
  return { engineDir, cached: false };
}
