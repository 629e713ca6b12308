import * as path from 'node:path';

/**
 * Absolute path of the scribe-7m Hugging Face checkpoint folder (config.json, model.safetensors,
 * tokenizer files, and the reference outputs reference.json / reference.safetensors). It sits beside
 * `src/` and `dist/`, so the same expression holds for the sources and the built package.
 */
export const scribe7mPath: string = path.resolve(__dirname, '..', 'model');
