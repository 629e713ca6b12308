// tokenizer.json is checked at conversion (issue 16: a broken one used to convert and build, and fail
// only at generate, after the slow steps). It must build into a tokenizer with the same library the
// runtime uses, encode text, and give token ids inside the model's vocabulary.
import * as path from 'node:path';
import { ConvertError } from './errors';
import { isFile, readJsonObject } from './json-file';

interface HfTokenizer {
  encode(text: string, options?: { add_special_tokens?: boolean }): { ids: number[] };
}
type HfTokenizerConstructor = new (tokenizerJson: object, tokenizerConfig: object) => HfTokenizer;

/** A probe with letters, digits, punctuation, spaces and non-ASCII text. */
const PROBE = 'Kiln checks 123 tokenizers, é ü 中文 🙂.';

export async function checkTokenizer(modelDir: string, vocabSize: number | undefined): Promise<void> {
  const tokenizerPath = path.join(modelDir, 'tokenizer.json');
  if (!(await isFile(tokenizerPath))) return;  // optional: a model may be converted without one
  const json = await readJsonObject(tokenizerPath);
  const configPath = path.join(modelDir, 'tokenizer_config.json');
  const config = (await isFile(configPath)) ? await readJsonObject(configPath) : {};
  const model = json.model as { type?: unknown } | undefined;
  if (typeof model !== 'object' || model === null || Array.isArray(model)) {
    throw new ConvertError(tokenizerPath, '"model" is missing or not an object: not a Hugging Face tokenizer.json');
  }
  const { Tokenizer } = require('@huggingface/tokenizers') as { Tokenizer: HfTokenizerConstructor };
  let ids: number[];
  try {
    ids = new Tokenizer(json, config).encode(PROBE, { add_special_tokens: true }).ids;
  } catch (error) {
    throw new ConvertError(tokenizerPath, `cannot build or run the tokenizer: ${(error as Error).message}`);
  }
  if (ids.length === 0) throw new ConvertError(tokenizerPath, `encodes ${JSON.stringify(PROBE)} to no tokens`);
  const bad = ids.find((id) => !Number.isSafeInteger(id) || id < 0 || (vocabSize !== undefined && id >= vocabSize));
  if (bad !== undefined) {
    throw new ConvertError(tokenizerPath, `gives token id ${bad}, outside the model's vocabulary (vocab_size ${vocabSize} in config.json)`);
  }
  // Every token the tokenizer may add must exist in the model too.
  const added = Array.isArray(json.added_tokens) ? (json.added_tokens as { id?: unknown; content?: unknown }[]) : [];
  for (const token of added) {
    if (vocabSize !== undefined && typeof token.id === 'number' && token.id >= vocabSize) {
      throw new ConvertError(tokenizerPath, `added token ${JSON.stringify(token.content)} has id ${token.id}, outside the model's vocabulary (vocab_size ${vocabSize} in config.json)`);
    }
  }
}
