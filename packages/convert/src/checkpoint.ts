import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { ConfigError, getArchitecture, type KilnCheckpointConfig } from '@kiln/models';
import { CHECKPOINT_DTYPES, isCheckpointDType } from './hf-config';
import { ConvertError } from './errors';
import { describeJson, isFile, readJsonObject } from './json-file';

export const CHECKPOINT_FORMAT = 'kiln-checkpoint';
export const CHECKPOINT_FORMAT_VERSION = 1;
export const CHECKPOINT_CONFIG_FILE = 'config.json';
/** The weights of rank 0 (of a single-rank checkpoint: all of them). */
export const CHECKPOINT_WEIGHTS_FILE = 'rank0.safetensors';

/** The weights file of `rank` (tensor/pipeline-parallel checkpoints have one per rank: shard.ts). */
export function rankWeightsFile(rank: number): string {
  return `rank${rank}.safetensors`;
}

/** HF side files a Kiln checkpoint carries along for the runtime (tokenizer, chat template, defaults). */
export const TOKENIZER_FILES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'generation_config.json',
  'chat_template.jinja',
] as const;

export interface KilnCheckpoint {
  config: KilnCheckpointConfig;
  /** Absolute path of rank0.safetensors. */
  weightsFile: string;
  /** Absolute paths of every rank's weights, by rank (one for a single-rank checkpoint). */
  weightsFiles: string[];
}

function isPositiveInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value > 0;
}

function isTokenId(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Reads and validates a Kiln checkpoint's config.json (what `convertCheckpoint` writes), for the builder.
 * Errors name the file and the key at fault; the architecture must be registered.
 */
export async function readKilnCheckpoint(dir: string): Promise<KilnCheckpoint> {
  const root = path.resolve(dir);
  let stat;
  try {
    stat = await fs.stat(root);
  } catch {
    throw new ConvertError(root, 'checkpoint folder not found');
  }
  if (!stat.isDirectory()) throw new ConvertError(root, 'not a folder (expected a Kiln checkpoint folder)');

  const file = path.join(root, CHECKPOINT_CONFIG_FILE);
  const json = await readJsonObject(file);
  if (json.format !== CHECKPOINT_FORMAT) {
    throw new ConfigError(
      file,
      'format',
      `expected "${CHECKPOINT_FORMAT}", got ${describeJson(json.format)}` +
        (json.architectures !== undefined ? ' (this looks like a Hugging Face folder: run `kiln convert` first)' : ''),
    );
  }
  if (json.formatVersion !== CHECKPOINT_FORMAT_VERSION) {
    throw new ConfigError(
      file,
      'formatVersion',
      `expected ${CHECKPOINT_FORMAT_VERSION}, got ${describeJson(json.formatVersion)} (convert the model again with this Kiln)`,
    );
  }
  if (typeof json.architecture !== 'string' || json.architecture.length === 0) {
    throw new ConfigError(file, 'architecture', `expected a class name, got ${describeJson(json.architecture)}`);
  }
  getArchitecture(json.architecture, file);
  if (!isCheckpointDType(json.dtype)) {
    throw new ConfigError(file, 'dtype', `expected one of ${CHECKPOINT_DTYPES.join(', ')}, got ${describeJson(json.dtype)}`);
  }

  const mapping = json.mapping;
  if (!isObject(mapping)) throw new ConfigError(file, 'mapping', `expected an object, got ${describeJson(mapping)}`);
  for (const key of ['worldSize', 'tpSize', 'ppSize']) {
    if (!isPositiveInteger(mapping[key])) {
      throw new ConfigError(file, `mapping.${key}`, `expected a positive integer, got ${describeJson(mapping[key])}`);
    }
  }
  const { worldSize, tpSize, ppSize } = mapping as { worldSize: number; tpSize: number; ppSize: number };
  if (worldSize !== tpSize * ppSize) {
    throw new ConfigError(file, 'mapping.worldSize', `${worldSize} is not tpSize * ppSize = ${tpSize * ppSize}`);
  }
  if (worldSize > 4096) throw new ConfigError(file, 'mapping.worldSize', `${worldSize} ranks: at most 4096 are supported`);

  if (!isObject(json.model)) throw new ConfigError(file, 'model', `expected an object, got ${describeJson(json.model)}`);

  const generation = json.generation;
  if (!isObject(generation)) {
    throw new ConfigError(file, 'generation', `expected an object, got ${describeJson(generation)}`);
  }
  for (const key of ['bosTokenId', 'padTokenId']) {
    if (generation[key] !== null && !isTokenId(generation[key])) {
      throw new ConfigError(file, `generation.${key}`, `expected a token id or null, got ${describeJson(generation[key])}`);
    }
  }
  if (!Array.isArray(generation.eosTokenIds) || !generation.eosTokenIds.every(isTokenId)) {
    throw new ConfigError(file, 'generation.eosTokenIds', `expected a list of token ids, got ${describeJson(generation.eosTokenIds)}`);
  }

  const weightsFiles = Array.from({ length: worldSize }, (_, rank) => path.join(root, rankWeightsFile(rank)));
  for (const weightsFile of weightsFiles) {
    if (!(await isFile(weightsFile))) throw new ConvertError(weightsFile, 'file not found (the checkpoint is incomplete)');
  }
  return { config: json as unknown as KilnCheckpointConfig, weightsFile: weightsFiles[0], weightsFiles };
}
