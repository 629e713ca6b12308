import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { ConfigError, type CheckpointDType, type GenerationIds } from '@kiln/models';
import { ConvertError } from './errors';
import { describeJson, isFile, readJsonObject } from './json-file';

export const CHECKPOINT_DTYPES: readonly CheckpointDType[] = ['float32', 'float16', 'bfloat16'];

export function isCheckpointDType(value: unknown): value is CheckpointDType {
  return typeof value === 'string' && (CHECKPOINT_DTYPES as readonly string[]).includes(value);
}

export interface HfConfigFile {
  /** Absolute path of config.json. */
  path: string;
  json: Record<string, unknown>;
  /** `architectures[0]`. */
  architecture: string;
}

/** Checks the model folder and reads its config.json, down to a usable `architectures[0]`. */
export async function readHfConfig(modelDir: string): Promise<HfConfigFile> {
  let stat;
  try {
    stat = await fs.stat(modelDir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new ConvertError(modelDir, 'model folder not found');
    }
    throw new ConvertError(modelDir, `cannot read the model folder: ${(error as Error).message}`);
  }
  if (!stat.isDirectory()) throw new ConvertError(modelDir, 'not a folder (expected a Hugging Face model folder)');

  const configPath = path.join(modelDir, 'config.json');
  const json = await readJsonObject(configPath);
  const architectures = json.architectures;
  if (
    !Array.isArray(architectures) ||
    architectures.length === 0 ||
    !architectures.every((name) => typeof name === 'string' && name.length > 0)
  ) {
    throw new ConfigError(
      configPath,
      'architectures',
      architectures === undefined
        ? 'missing (expected a list of class names such as ["LlamaForCausalLM"])'
        : `expected a non-empty list of class names, got ${describeJson(architectures)}`,
    );
  }
  return { path: configPath, json, architecture: architectures[0] as string };
}

/** Names of the config's `dtype` that mean one of Kiln's storage dtypes, or none in particular. */
const DTYPE_ALIASES: Record<string, CheckpointDType | undefined> = {
  float32: 'float32', float: 'float32', float16: 'float16', half: 'float16', bfloat16: 'bfloat16', auto: undefined,
};

/**
 * The storage dtype the HF config declares (`dtype` in transformers 5, `torch_dtype` before); float32
 * when it declares none ("auto", null or absent). Any other name (int4, int8, float8_e4m3fn, a typo) is
 * refused, naming the key and the value: it used to be ignored silently (issue 16), converting a model
 * whose weights are not what the config says.
 */
export function defaultDType(hfConfig: Record<string, unknown>, configPath = 'config.json'): CheckpointDType {
  for (const key of ['dtype', 'torch_dtype']) {
    const value = hfConfig[key];
    if (value === undefined || value === null) continue;
    if (typeof value !== 'string' || !(value in DTYPE_ALIASES)) {
      throw new ConfigError(
        configPath,
        key,
        `is ${describeJson(value)}, which Kiln cannot convert (expected float32, float16, bfloat16 or "auto"; quantized checkpoints are not supported)`,
      );
    }
    const dtype = DTYPE_ALIASES[value];
    if (dtype !== undefined) return dtype;
  }
  return 'float32';
}

function tokenId(value: unknown, file: string, key: string): number | null {
  if (value === undefined || value === null) return null;
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) return value;
  throw new ConfigError(file, key, `expected a non-negative integer or null, got ${describeJson(value)}`);
}

function tokenIds(value: unknown, file: string, key: string): number[] {
  if (Array.isArray(value)) {
    return value.map((item, i) => tokenId(item, file, `${key}[${i}]`) ?? invalidNull(file, `${key}[${i}]`));
  }
  const id = tokenId(value, file, key);
  return id === null ? [] : [id];
}

function invalidNull(file: string, key: string): never {
  throw new ConfigError(file, key, 'expected a non-negative integer, got null');
}

/**
 * bos / eos / pad ids: from config.json, each overridden by generation_config.json when that file exists
 * and sets the key (it is what `generate` uses in transformers). eos may be one id or a list.
 */
export async function readGenerationIds(
  modelDir: string,
  hfConfig: Record<string, unknown>,
  configPath: string,
): Promise<GenerationIds> {
  const generationPath = path.join(modelDir, 'generation_config.json');
  const generation = (await isFile(generationPath)) ? await readJsonObject(generationPath) : undefined;
  const pick = (key: string): [unknown, string] =>
    generation && key in generation ? [generation[key], generationPath] : [hfConfig[key], configPath];

  const [bos, bosFile] = pick('bos_token_id');
  const [eos, eosFile] = pick('eos_token_id');
  const [pad, padFile] = pick('pad_token_id');
  return {
    bosTokenId: tokenId(bos, bosFile, 'bos_token_id'),
    eosTokenIds: [...new Set(tokenIds(eos, eosFile, 'eos_token_id'))],
    padTokenId: tokenId(pad, padFile, 'pad_token_id'),
  };
}
