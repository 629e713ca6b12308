import { ConfigError } from '@kiln/models';
import type { GgufInfo, GgufMetadataEntry, GgufTensorInfo, NativeAddon } from '@kiln/native';

/**
 * A GGUF file as the native reader validated it (structure, counts, lengths, tensor ranges: all bounded
 * there), with typed access to its metadata: each accessor's error names the file and the key.
 */
export class GgufModelFile {
  readonly path: string;
  readonly info: GgufInfo;
  readonly tensors: Map<string, GgufTensorInfo>;
  readonly #metadata: Map<string, GgufMetadataEntry>;

  constructor(info: GgufInfo) {
    this.path = info.path;
    this.info = info;
    this.tensors = new Map(info.tensors.map((t) => [t.name, t]));
    this.#metadata = new Map(info.metadata.map((e) => [e.key, e]));
  }

  static async read(file: string, native: Pick<NativeAddon, 'readGguf'>): Promise<GgufModelFile> {
    return new GgufModelFile(await native.readGguf(file));
  }

  has(key: string): boolean {
    return this.#metadata.has(key);
  }

  entry(key: string): GgufMetadataEntry | undefined {
    return this.#metadata.get(key);
  }

  string(key: string): string {
    const value = this.optionalString(key);
    if (value === undefined) throw new ConfigError(this.path, key, 'missing (expected a string)');
    return value;
  }

  optionalString(key: string): string | undefined {
    const e = this.#metadata.get(key);
    if (e === undefined) return undefined;
    if (e.type !== 'STRING') throw new ConfigError(this.path, key, `expected a string, got a ${e.type}`);
    return e.value;
  }

  /** A positive integer hyperparameter (a count or a size). */
  positiveInteger(key: string): number {
    const value = this.optionalNumber(key);
    if (value === undefined) throw new ConfigError(this.path, key, 'missing (expected a positive integer)');
    if (!Number.isSafeInteger(value) || value < 1) throw new ConfigError(this.path, key, `expected a positive integer, got ${value}`);
    return value;
  }

  optionalInteger(key: string, min = 0): number | undefined {
    const value = this.optionalNumber(key);
    if (value === undefined) return undefined;
    if (!Number.isSafeInteger(value) || value < min) throw new ConfigError(this.path, key, `expected an integer >= ${min}, got ${value}`);
    return value;
  }

  /** A positive finite number (an epsilon, a rope base). */
  optionalPositive(key: string): number | undefined {
    const value = this.optionalNumber(key);
    if (value === undefined) return undefined;
    if (!Number.isFinite(value) || value <= 0) throw new ConfigError(this.path, key, `expected a positive number, got ${value}`);
    return value;
  }

  optionalNumber(key: string): number | undefined {
    const e = this.#metadata.get(key);
    if (e === undefined) return undefined;
    if (e.type === 'STRING' || e.type === 'ARRAY' || e.type === 'BOOL') {
      throw new ConfigError(this.path, key, `expected a number, got a ${e.type}`);
    }
    // A FLOAT32 holds the decimal its writer meant (1e-5 from a config.json) only approximately: give
    // back the shortest decimal that rounds to the same float32, as transformers' config would hold it.
    return e.type === 'FLOAT32' ? shortestFloat32Decimal(e.value) : e.value;
  }

  optionalBoolean(key: string): boolean | undefined {
    const e = this.#metadata.get(key);
    if (e === undefined) return undefined;
    if (e.type !== 'BOOL') throw new ConfigError(this.path, key, `expected a BOOL, got a ${e.type}`);
    return e.value;
  }

  optionalStringArray(key: string): string[] | undefined {
    const e = this.#metadata.get(key);
    if (e === undefined) return undefined;
    if (e.type !== 'ARRAY' || e.itemType !== 'STRING') throw new ConfigError(this.path, key, 'expected an array of strings');
    return e.value;
  }

  optionalNumberArray(key: string): number[] | undefined {
    const e = this.#metadata.get(key);
    if (e === undefined) return undefined;
    if (e.type !== 'ARRAY' || e.itemType === 'STRING' || e.itemType === 'BOOL') {
      throw new ConfigError(this.path, key, 'expected an array of numbers');
    }
    return e.value;
  }
}

/** The shortest decimal (up to 9 significant digits, always enough) that rounds to the float32 `value`. */
export function shortestFloat32Decimal(value: number): number {
  if (!Number.isFinite(value) || value === 0) return value;
  for (let digits = 1; digits <= 9; digits++) {
    const candidate = Number(value.toPrecision(digits));
    if (Math.fround(candidate) === Math.fround(value)) return candidate;
  }
  return value;
}
