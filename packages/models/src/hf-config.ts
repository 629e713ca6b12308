// Readers for Hugging Face config.json values: every getter names the file and key it rejects.
import { RopeScaling } from '@kiln/core';
import { ConfigError } from './registry';

export type HfConfig = Record<string, unknown>;

export function requireInteger(config: HfConfig, key: string, file: string, min = 1): number {
  const value = config[key];
  if (value === undefined || value === null) throw new ConfigError(file, key, 'required key is missing');
  return checkInteger(value, key, file, min);
}

export function optionalInteger(config: HfConfig, key: string, file: string, fallback: number, min = 1): number {
  const value = config[key];
  return value === undefined || value === null ? fallback : checkInteger(value, key, file, min);
}

function checkInteger(value: unknown, key: string, file: string, min: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw new ConfigError(file, key, `expected an integer >= ${min}, got ${JSON.stringify(value)}`);
  }
  return value;
}

export function optionalNumber(config: HfConfig, key: string, file: string, fallback: number): number {
  const value = config[key];
  if (value === undefined || value === null) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new ConfigError(file, key, `expected a number, got ${JSON.stringify(value)}`);
  }
  return value;
}

export function optionalBoolean(config: HfConfig, key: string, file: string, fallback: boolean): boolean {
  const value = config[key];
  if (value === undefined || value === null) return fallback;
  if (typeof value !== 'boolean') throw new ConfigError(file, key, `expected true or false, got ${JSON.stringify(value)}`);
  return value;
}

export function optionalString(config: HfConfig, key: string, file: string, fallback: string): string {
  const value = config[key];
  if (value === undefined || value === null) return fallback;
  if (typeof value !== 'string') throw new ConfigError(file, key, `expected a string, got ${JSON.stringify(value)}`);
  return value;
}

export interface RopeSettings {
  theta: number;
  scaling: RopeScaling;
}

/**
 * RoPE settings in either config style: transformers 5's `rope_parameters` object, or the legacy
 * top-level `rope_theta` with an optional `rope_scaling` object (whose type key is `rope_type` or the
 * older `type`).
 */
export function readRope(config: HfConfig, file: string, defaultTheta = 10000): RopeSettings {
  const modern = config.rope_parameters;
  let params: HfConfig;
  let where: string;
  if (modern !== undefined && modern !== null) {
    if (typeof modern !== 'object' || Array.isArray(modern)) throw new ConfigError(file, 'rope_parameters', 'expected an object');
    params = modern as HfConfig;
    where = 'rope_parameters';
  } else {
    const legacy = config.rope_scaling;
    if (legacy !== undefined && legacy !== null && (typeof legacy !== 'object' || Array.isArray(legacy))) {
      throw new ConfigError(file, 'rope_scaling', 'expected an object or null');
    }
    params = { rope_theta: config.rope_theta, ...((legacy as HfConfig | null) ?? {}) };
    where = 'rope_scaling';
  }
  const theta = optionalNumber(params, 'rope_theta', file, defaultTheta);
  if (!(theta > 0)) throw new ConfigError(file, `${where}.rope_theta`, `expected a positive number, got ${theta}`);
  const type = optionalString(params, 'rope_type', file, optionalString(params, 'type', file, 'default'));
  const factor = () => {
    const value = optionalNumber(params, 'factor', file, NaN);
    if (!(value > 0)) throw new ConfigError(file, `${where}.factor`, `expected a positive number, got ${params.factor}`);
    return value;
  };
  switch (type) {
    case 'default':
      return { theta, scaling: { type: 'default' } };
    case 'linear':
      return { theta, scaling: { type: 'linear', factor: factor() } };
    case 'llama3':
      return {
        theta,
        scaling: {
          type: 'llama3',
          factor: factor(),
          lowFreqFactor: optionalNumber(params, 'low_freq_factor', file, 1),
          highFreqFactor: optionalNumber(params, 'high_freq_factor', file, 4),
          originalMaxPositionEmbeddings: requireInteger(params, 'original_max_position_embeddings', file),
        },
      };
    default:
      throw new ConfigError(file, `${where}.rope_type`, `"${type}" is not supported (supported: default, linear, llama3)`);
  }
}
