import { promises as fs } from 'node:fs';
import { ConvertError } from './errors';

/**
 * The most bytes a JSON side file (config, generation config, shard index) may have. The largest real
 * shard indexes are a few MiB; anything far beyond is not a config and is refused before parsing.
 */
export const MAX_JSON_FILE_BYTES = 64 * 1024 * 1024;

/** Whether `file` exists and is a regular file (following symlinks, as the Hugging Face cache uses them). */
export async function isFile(file: string): Promise<boolean> {
  try {
    return (await fs.stat(file)).isFile();
  } catch {
    return false;
  }
}

/** Reads and parses a JSON file that must hold an object; every failure names the file. */
export async function readJsonObject(file: string): Promise<Record<string, unknown>> {
  let stat;
  try {
    stat = await fs.stat(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new ConvertError(file, 'file not found');
    throw new ConvertError(file, `cannot read: ${(error as Error).message}`);
  }
  if (!stat.isFile()) throw new ConvertError(file, 'not a regular file');
  if (stat.size > MAX_JSON_FILE_BYTES) {
    throw new ConvertError(file, `${stat.size} bytes is too large for a JSON config (limit ${MAX_JSON_FILE_BYTES})`);
  }
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (error) {
    throw new ConvertError(file, `cannot read: ${(error as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new ConvertError(file, `invalid JSON: ${(error as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ConvertError(file, `expected a JSON object, got ${describeJson(value)}`);
  }
  return value as Record<string, unknown>;
}

/** A short description of a JSON value for error messages (never the whole of a large value). */
export function describeJson(value: unknown): string {
  if (value === undefined) return 'nothing (the key is missing)';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  const text = JSON.stringify(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** `[a, b]` for shapes in messages. */
export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}
