import * as path from 'node:path';
import { ConfigError } from '@kiln/models';
import type { SafetensorsInfo, SafetensorsTensorInfo } from '@kiln/native';
import { ConvertError } from './errors';
import { describeJson, isFile, readJsonObject } from './json-file';

export const SINGLE_WEIGHTS_FILE = 'model.safetensors';
export const WEIGHTS_INDEX_FILE = 'model.safetensors.index.json';

/** A tensor of the HF checkpoint and the shard that holds it. */
export interface HfTensor {
  /** Absolute path of the safetensors file. */
  file: string;
  info: SafetensorsTensorInfo;
}

export interface HfWeights {
  /** The safetensors files read, in the order read. */
  files: string[];
  /** Every tensor of those files, by name. */
  tensors: Map<string, HfTensor>;
}

export type SafetensorsReader = (file: string) => Promise<SafetensorsInfo>;

/**
 * A shard named by the index must be a plain file name in the model folder: the index is untrusted input,
 * and "../secrets" or "/etc/passwd" must never be opened on its behalf.
 */
function isPlainFileName(name: string): boolean {
  return (
    name.length > 0 &&
    name !== '.' &&
    name !== '..' &&
    !name.includes('/') &&
    !name.includes('\\') &&
    !name.includes('\0') &&
    !path.isAbsolute(name) &&
    path.basename(name) === name
  );
}

/** Reads model.safetensors.index.json: tensor name -> absolute shard path, every entry validated. */
async function readIndex(modelDir: string, indexPath: string): Promise<Map<string, string>> {
  const index = await readJsonObject(indexPath);
  const weightMap = index.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw new ConfigError(
      indexPath,
      'weight_map',
      weightMap === undefined
        ? 'missing (expected an object mapping tensor names to shard files)'
        : `expected an object mapping tensor names to shard files, got ${describeJson(weightMap)}`,
    );
  }
  const entries = Object.entries(weightMap as Record<string, unknown>);
  if (entries.length === 0) throw new ConfigError(indexPath, 'weight_map', 'is empty');

  const result = new Map<string, string>();
  const checkedShards = new Map<string, string>();
  for (const [tensor, shard] of entries) {
    const key = `weight_map[${JSON.stringify(tensor)}]`;
    if (typeof shard !== 'string') {
      throw new ConfigError(indexPath, key, `expected a shard file name, got ${describeJson(shard)}`);
    }
    if (!isPlainFileName(shard)) {
      throw new ConfigError(
        indexPath,
        key,
        `${JSON.stringify(shard)} is not a plain file name inside the model folder ${modelDir}`,
      );
    }
    let shardPath = checkedShards.get(shard);
    if (shardPath === undefined) {
      shardPath = path.join(modelDir, shard);
      if (!(await isFile(shardPath))) {
        throw new ConfigError(indexPath, key, `shard file ${JSON.stringify(shard)} not found in ${modelDir}`);
      }
      checkedShards.set(shard, shardPath);
    }
    result.set(tensor, shardPath);
  }
  return result;
}

/**
 * Finds the checkpoint's safetensors files (one `model.safetensors`, or the shards its index names),
 * reads and validates each header (the native reader checks bounds, dtypes, sizes and overlaps, and its
 * errors name the file), and indexes every tensor by name.
 */
export async function readHfWeights(modelDir: string, readSafetensors: SafetensorsReader): Promise<HfWeights> {
  const singlePath = path.join(modelDir, SINGLE_WEIGHTS_FILE);
  const indexPath = path.join(modelDir, WEIGHTS_INDEX_FILE);
  let files: string[];
  let indexMap: Map<string, string> | undefined;
  if (await isFile(singlePath)) {
    files = [singlePath];
  } else if (await isFile(indexPath)) {
    indexMap = await readIndex(modelDir, indexPath);
    files = [...new Set(indexMap.values())];
  } else {
    throw new ConvertError(modelDir, `no ${SINGLE_WEIGHTS_FILE} or ${WEIGHTS_INDEX_FILE} in ${modelDir}`);
  }

  const tensors = new Map<string, HfTensor>();
  for (const file of files) {
    const header = await readSafetensors(file);
    for (const info of header.tensors) {
      const earlier = tensors.get(info.name);
      if (earlier) {
        throw new ConvertError(
          file,
          `tensor ${JSON.stringify(info.name)} is also in ${earlier.file}; a tensor must be in one shard only`,
        );
      }
      tensors.set(info.name, { file, info });
    }
  }

  if (indexMap) {
    for (const [tensor, shardPath] of indexMap) {
      if (tensors.get(tensor)?.file !== shardPath) {
        throw new ConfigError(
          indexPath,
          `weight_map[${JSON.stringify(tensor)}]`,
          `shard ${JSON.stringify(path.basename(shardPath))} has no tensor ${JSON.stringify(tensor)}`,
        );
      }
    }
  }
  return { files, tensors };
}
