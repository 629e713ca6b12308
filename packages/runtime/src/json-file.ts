import { promises as fs } from 'node:fs';

/**
 * Reads and parses a JSON file that must hold an object, refusing files over `maxBytes` before reading
 * them (engine directories and tokenizer folders are untrusted input: a huge "config" is an attack or a
 * mistake, never something to parse). Every failure names the file.
 */
export async function readJsonObject(file: string, maxBytes: number): Promise<Record<string, unknown>> {
  let size: number;
  try {
    const stat = await fs.stat(file);
    if (!stat.isFile()) throw new Error(`${file} is not a regular file`);
    size = stat.size;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new Error(`${file} is missing`);
    throw error;
  }
  if (size > maxBytes) throw new Error(`${file} is ${size} bytes, more than the ${maxBytes} a JSON file may have here`);
  let value: unknown;
  try {
    value = JSON.parse(await fs.readFile(file, 'utf8'));
  } catch (error) {
    throw new Error(`${file} is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new Error(`${file} must hold a JSON object`);
  }
  return value as Record<string, unknown>;
}
