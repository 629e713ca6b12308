// Config readers shared by the families whose HF configs spell the same things differently.
import { ConfigError } from '../registry';
import { HfConfig, optionalBoolean, optionalInteger, optionalNumber } from '../hf-config';

/** The first of `keys` that the config sets (each family names its norm epsilon differently). */
export function readEps(config: HfConfig, file: string, keys: string[], fallback: number): number {
  for (const key of keys) {
    if (config[key] !== undefined && config[key] !== null) {
      const eps = optionalNumber(config, key, file, fallback);
      if (!(eps > 0)) throw new ConfigError(file, key, `expected a positive number, got ${eps}`);
      return eps;
    }
  }
  return fallback;
}

/**
 * The fraction of each head that rotates: transformers 5 keeps it in `rope_parameters`; older configs
 * have a top-level `partial_rotary_factor` (Phi) or `rotary_pct` (GPT-NeoX).
 */
export function readPartialRotaryFactor(config: HfConfig, file: string, fallback = 1): number {
  const params = config.rope_parameters;
  let factor: number | undefined;
  let key = 'partial_rotary_factor';
  if (params && typeof params === 'object' && !Array.isArray(params) && (params as HfConfig).partial_rotary_factor != null) {
    factor = optionalNumber(params as HfConfig, 'partial_rotary_factor', file, fallback);
    key = 'rope_parameters.partial_rotary_factor';
  } else if (config.partial_rotary_factor != null) {
    factor = optionalNumber(config, 'partial_rotary_factor', file, fallback);
  } else if (config.rotary_pct != null) {
    factor = optionalNumber(config, 'rotary_pct', file, fallback);
    key = 'rotary_pct';
  }
  const value = factor ?? fallback;
  if (!(value > 0 && value <= 1)) throw new ConfigError(file, key, `expected a number in (0, 1], got ${value}`);
  return value;
}

/** transformers' `int(head_dim * partial_rotary_factor)`; must leave an even, non-empty rotary part. */
export function rotaryDimFor(headDim: number, factor: number, file: string, key: string): number {
  const dim = Math.floor(headDim * factor);
  if (dim < 2 || dim % 2 !== 0) {
    throw new ConfigError(file, key, `gives a rotary dimension of ${dim} for head_dim ${headDim}; it must be even and >= 2`);
  }
  return dim;
}

/**
 * Per-layer sliding windows (0 = full attention). transformers 5 configs list `layer_types`
 * ("sliding_attention" / "full_attention"); without it, `sliding_window` applies to every layer when
 * `allLayersByDefault` (Mistral, Starcoder2) and to none otherwise. `use_sliding_window: false` (Qwen)
 * switches windows off whatever the other keys say.
 */
export function readSlidingWindows(
  config: HfConfig,
  file: string,
  numLayers: number,
  options: { allLayersByDefault: boolean; honourUseSlidingWindow?: boolean },
): number[] {
  const none = new Array<number>(numLayers).fill(0);
  if (options.honourUseSlidingWindow && !optionalBoolean(config, 'use_sliding_window', file, false)) return none;
  if (config.sliding_window === undefined || config.sliding_window === null) return none;
  const size = optionalInteger(config, 'sliding_window', file, 0);
  const layerTypes = config.layer_types;
  if (layerTypes !== undefined && layerTypes !== null) {
    if (!Array.isArray(layerTypes) || layerTypes.length !== numLayers) {
      throw new ConfigError(file, 'layer_types', `expected a list of ${numLayers} layer types`);
    }
    return layerTypes.map((type, i) => {
      if (type === 'sliding_attention') return size;
      if (type === 'full_attention') return 0;
      throw new ConfigError(file, `layer_types[${i}]`, `"${String(type)}" is not supported (expected sliding_attention or full_attention)`);
    });
  }
  return options.allLayersByDefault ? none.map(() => size) : none;
}

/** Fails clearly on a config value this implementation does not support. */
export function requireSetting(config: HfConfig, key: string, file: string, expected: boolean, fallback: boolean, why: string): void {
  const value = optionalBoolean(config, key, file, fallback);
  if (value !== expected) throw new ConfigError(file, key, `${value} is not supported: ${why}`);
}

/**
 * An integer under the first of `keys` present (GPT-2-era configs say n_embd / n_head / n_layer where
 * newer ones say hidden_size / num_attention_heads / num_hidden_layers). Missing everywhere: `fallback`,
 * or a ConfigError naming the first key when there is none.
 */
export function readIntegerKey(config: HfConfig, file: string, keys: string[], fallback?: number): number {
  for (const key of keys) {
    if (config[key] !== undefined && config[key] !== null) return optionalInteger(config, key, file, 0);
  }
  if (fallback === undefined) throw new ConfigError(file, keys[0], 'required key is missing');
  return fallback;
}

/** hidden / heads, failing clearly when heads do not divide hidden. */
export function headDimOf(hiddenSize: number, numHeads: number, file: string, headsKey: string): number {
  if (hiddenSize % numHeads !== 0) {
    throw new ConfigError(file, headsKey, `${numHeads} heads do not divide the hidden size ${hiddenSize}`);
  }
  return hiddenSize / numHeads;
}
