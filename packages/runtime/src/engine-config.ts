import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { readJsonObject } from './json-file';

/** The engine directory format this runtime reads (written by @kiln/builder). */
export const ENGINE_DIR_FORMAT = 'kiln-engine-dir';
export const ENGINE_DIR_FORMAT_VERSION = 1;

/** An engine's config.json is a few KiB (build config + model config); 16 MiB is far past any real one. */
const MAX_ENGINE_CONFIG_BYTES = 16 * 1024 * 1024;

/**
 * What the runtime reads of the Kiln checkpoint config embedded in an engine directory (the full type is
 * @kiln/models' `KilnCheckpointConfig`; the runtime does not depend on the model zoo).
 */
export interface EngineCheckpointInfo {
  architecture: string;
  dtype: string;
  model: Record<string, unknown>;
  generation: { bosTokenId: number | null; eosTokenIds: number[]; padTokenId: number | null };
}

/** The `config.json` of an engine directory, as validated by `readEngineDirConfig`. */
export interface EngineDirConfig {
  format: typeof ENGINE_DIR_FORMAT;
  formatVersion: typeof ENGINE_DIR_FORMAT_VERSION;
  target: Record<string, unknown>;
  /** The builder's BuildConfig (maxBatchSize, maxSeqLen, gatherContextLogits, ...). */
  buildConfig: Record<string, unknown>;
  buildHash: string;
  checkpoint: EngineCheckpointInfo;
  /** One file name per rank, relative to the engine directory. */
  engineFiles: string[];
}

function isTokenId(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/**
 * Reads and validates `<engineDir>/config.json`. Errors name the directory or the file and the key at
 * fault; the `.engine` files themselves are validated by the native loader.
 */
export async function readEngineDirConfig(engineDir: string): Promise<EngineDirConfig> {
  let stat;
  try {
    stat = await fs.stat(engineDir);
  } catch {
    throw new Error(`engine directory ${engineDir} does not exist`);
  }
  if (!stat.isDirectory()) throw new Error(`${engineDir} is not an engine directory (it is a file)`);
  const configPath = path.join(engineDir, 'config.json');
  let config: Record<string, unknown>;
  try {
    config = await readJsonObject(configPath, MAX_ENGINE_CONFIG_BYTES);
  } catch (error) {
    const message = (error as Error).message;
    throw new Error(message.endsWith('is missing') ? `${engineDir} is not a Kiln engine directory: ${message}` : message);
  }
  const fail = (key: string, problem: string): never => {
    throw new Error(`${configPath}: "${key}" ${problem}`);
  };
  if (config.format !== ENGINE_DIR_FORMAT) {
    fail('format', `is ${JSON.stringify(config.format)}, expected "${ENGINE_DIR_FORMAT}": not a Kiln engine directory`);
  }
  if (config.formatVersion !== ENGINE_DIR_FORMAT_VERSION) {
    fail(
      'formatVersion',
      `is ${JSON.stringify(config.formatVersion)}, but this Kiln reads version ${ENGINE_DIR_FORMAT_VERSION}: rebuild the engine with this version's \`kiln build\``,
    );
  }
  for (const key of ['target', 'buildConfig', 'checkpoint'] as const) {
    const value = config[key];
    if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(key, 'must be an object');
  }
  if (typeof config.buildHash !== 'string') fail('buildHash', 'must be a string');

  const engineFiles = config.engineFiles;
  if (!Array.isArray(engineFiles) || engineFiles.length === 0) fail('engineFiles', 'must be a non-empty array of file names');
  for (const file of engineFiles as unknown[]) {
    // Plain names only: an untrusted config must not point the loader outside its own directory.
    if (typeof file !== 'string' || file === '' || file !== path.basename(file) || file === '.' || file === '..') {
      fail('engineFiles', `holds ${JSON.stringify(file)}, which is not a plain file name`);
    }
  }

  const checkpoint = config.checkpoint as Record<string, unknown>;
  if (typeof checkpoint.architecture !== 'string') fail('checkpoint.architecture', 'must be a string');
  if (typeof checkpoint.model !== 'object' || checkpoint.model === null) fail('checkpoint.model', 'must be an object');
  const generation = checkpoint.generation as Record<string, unknown> | undefined;
  if (typeof generation !== 'object' || generation === null) fail('checkpoint.generation', 'must be an object');
  // A tensor/pipeline-parallel engine has one file per rank of its checkpoint's mapping.
  const mapping = checkpoint.mapping as Record<string, unknown> | undefined;
  const worldSize = mapping === undefined ? 1 : mapping.worldSize;
  if (!Number.isSafeInteger(worldSize) || (worldSize as number) < 1) fail('checkpoint.mapping.worldSize', 'must be a positive integer');
  if ((engineFiles as string[]).length !== worldSize) {
    fail('engineFiles', `lists ${(engineFiles as string[]).length} files but checkpoint.mapping.worldSize is ${String(worldSize)}`);
  }
  const eosTokenIds = (generation as Record<string, unknown>).eosTokenIds;
  if (!Array.isArray(eosTokenIds) || !eosTokenIds.every(isTokenId)) {
    fail('checkpoint.generation.eosTokenIds', 'must be an array of token ids');
  }
  return config as unknown as EngineDirConfig;
}
