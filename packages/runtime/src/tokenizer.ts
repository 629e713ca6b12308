import * as path from 'node:path';
import { grammarVocabularyOf, type GrammarVocabulary } from '@kiln/chat';
import { readJsonObject } from './json-file';

/**
 * The largest tokenizer.json we parse. Real ones reach ~35 MB (Gemma's 256k vocabulary); 256 MiB bounds
 * the memory an untrusted folder can make us spend on JSON.parse.
 */
const MAX_TOKENIZER_JSON_BYTES = 256 * 1024 * 1024;
const MAX_TOKENIZER_CONFIG_BYTES = 16 * 1024 * 1024;

/** The part of @huggingface/tokenizers' `Tokenizer` that Kiln uses (its types are ESM-only). */
interface HfTokenizer {
  encode(text: string, options?: { add_special_tokens?: boolean }): { ids: number[] };
  decode(ids: number[], options?: { skip_special_tokens?: boolean; clean_up_tokenization_spaces?: boolean }): string;
}
type HfTokenizerConstructor = new (tokenizerJson: object, tokenizerConfig: object) => HfTokenizer;

export interface DecodeOptions {
  /** Leave out special tokens such as `<|endoftext|>`. Default false (as transformers' `decode`). */
  skipSpecialTokens?: boolean;
}

/** A Hugging Face tokenizer (tokenizer.json + tokenizer_config.json) over @huggingface/tokenizers. */
export class Tokenizer {
  readonly #tokenizer: HfTokenizer;
  readonly #cleanUpTokenizationSpaces: boolean;
  readonly #json: Record<string, unknown>;

  private constructor(tokenizer: HfTokenizer, cleanUpTokenizationSpaces: boolean, json: Record<string, unknown>) {
    this.#tokenizer = tokenizer;
    this.#cleanUpTokenizationSpaces = cleanUpTokenizationSpaces;
    this.#json = json;
  }

  /** The token strings and byte encoding that grammars (structured output) are compiled against, for a vocabulary of `vocabSize` ids. */
  grammarVocabulary(vocabSize: number): GrammarVocabulary {
    return grammarVocabularyOf(this.#json, vocabSize);
  }

  /**
   * At most how many UTF-16 code units of input one token can stand for, so that a text of L units
   * needs at least ceil(L / this) tokens: known without encoding for byte-level BPE vocabularies
   * without a normalizer (every code unit becomes at least one byte, and a token covers at most its
   * own length in bytes; an added token its own length), undefined for the others. A server refuses a
   * prompt that cannot fit the context from its length alone, before tokenizing it.
   */
  get maxCharactersPerToken(): number | undefined {
    if (this.#maxCharactersPerToken === null) this.#maxCharactersPerToken = maxCharactersPerToken(this.#json);
    return this.#maxCharactersPerToken;
  }
  #maxCharactersPerToken: number | undefined | null = null;

  /**
   * Loads `<directory>/tokenizer.json` and, when present, `<directory>/tokenizer_config.json` (a
   * checkpoint, Kiln checkpoint or engine directory all hold them). Errors name the file.
   */
  static async load(directory: string): Promise<Tokenizer> {
    const tokenizerPath = path.join(directory, 'tokenizer.json');
    const configPath = path.join(directory, 'tokenizer_config.json');
    const tokenizerJson = await readJsonObject(tokenizerPath, MAX_TOKENIZER_JSON_BYTES);
    let tokenizerConfig: Record<string, unknown> = {};
    try {
      tokenizerConfig = await readJsonObject(configPath, MAX_TOKENIZER_CONFIG_BYTES);
    } catch (error) {
      // tokenizer_config.json is optional in transformers too; only a present but broken one is an error.
      if (!(error as Error).message.endsWith('is missing')) throw error;
    }
    // The CommonJS build of the package (its "type" is module; the require condition maps here).
    const { Tokenizer: HfTokenizerClass } = require('@huggingface/tokenizers') as { Tokenizer: HfTokenizerConstructor };
    let tokenizer: HfTokenizer;
    try {
      tokenizer = new HfTokenizerClass(tokenizerJson, tokenizerConfig);
    } catch (error) {
      throw new Error(`${tokenizerPath}: cannot build the tokenizer: ${(error as Error).message}`);
    }
    // transformers 5 defaults clean_up_tokenization_spaces to false (tokenizers.js to true): follow
    // transformers, whose decode gives back the text the model produced, " ." included.
    const cleanUp = tokenizerConfig.clean_up_tokenization_spaces === true;
    return new Tokenizer(tokenizer, cleanUp, tokenizerJson);
  }

  /**
   * Token ids of `text`, with the special tokens the tokenizer's post-processor adds (as transformers does
   * by default); `addSpecialTokens: false` leaves them out (for bad words and stop words).
   */
  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    return this.#tokenizer.encode(text, { add_special_tokens: options.addSpecialTokens !== false }).ids;
  }

  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    // @huggingface/tokenizers rejects an empty list; transformers decodes it to ''.
    if (ids.length === 0) return '';
    return this.#tokenizer.decode(Array.from(ids), {
      skip_special_tokens: options.skipSpecialTokens ?? false,
      clean_up_tokenization_spaces: this.#cleanUpTokenizationSpaces,
    });
  }

  /** A streaming detokenizer for one generated sequence. */
  createStreamDecoder(options: DecodeOptions = {}): StreamDecoder {
    return new StreamDecoder(this, options);
  }
}

/** See Tokenizer.maxCharactersPerToken. */
function maxCharactersPerToken(json: Record<string, unknown>): number | undefined {
  const model = json.model as { type?: unknown; vocab?: unknown } | undefined;
  const preTokenizer = json.pre_tokenizer as { type?: unknown; pretokenizers?: unknown } | null | undefined;
  const byteLevel = preTokenizer?.type === 'ByteLevel' ||
    (preTokenizer?.type === 'Sequence' && Array.isArray(preTokenizer.pretokenizers) &&
      (preTokenizer.pretokenizers as { type?: unknown }[]).some((step) => step?.type === 'ByteLevel'));
  if (model?.type !== 'BPE' || json.normalizer != null || !byteLevel) return undefined;
  if (typeof model.vocab !== 'object' || model.vocab === null || Array.isArray(model.vocab)) return undefined;
  let longest = 1;
  for (const token of Object.keys(model.vocab)) longest = Math.max(longest, token.length);
  if (Array.isArray(json.added_tokens)) {
    for (const added of json.added_tokens as { content?: unknown }[]) if (typeof added?.content === 'string') longest = Math.max(longest, added.content.length);
  }
  return longest;
}

/**
 * Turns generated tokens into text deltas as they arrive. Byte-level tokenizers split a multi-byte
 * character (an emoji, most CJK) over several tokens; a delta is held back while the decoded text ends in
 * U+FFFD (an incomplete character), so no delta ever splits one. The concatenated deltas, after `flush()`,
 * equal `decode(all tokens)`.
 *
 * It decodes a short window instead of the whole sequence each time (as text-generation-inference's
 * `decode_token`): `prefixOffset..readOffset` is text already emitted, kept as context because some
 * decoders (SentencePiece's Metaspace) change a token's text at the start of a sequence.
 */
export class StreamDecoder {
  readonly #tokenizer: Tokenizer;
  readonly #options: DecodeOptions;
  readonly #ids: number[] = [];
  #prefixOffset = 0;
  #readOffset = 0;

  constructor(tokenizer: Tokenizer, options: DecodeOptions = {}) {
    this.#tokenizer = tokenizer;
    this.#options = options;
  }

  /** Adds one token and returns the text it completes ('' while a character is still incomplete). */
  push(tokenId: number): string {
    this.#ids.push(tokenId);
    const { prefixText, newText } = this.#decodeWindow();
    if (newText.length <= prefixText.length || newText.endsWith('\uFFFD')) return '';
    this.#prefixOffset = this.#readOffset;
    this.#readOffset = this.#ids.length;
    return newText.slice(prefixText.length);
  }

  /** Returns whatever is held back (an incomplete character at the very end decodes to U+FFFD). */
  flush(): string {
    const { prefixText, newText } = this.#decodeWindow();
    this.#prefixOffset = this.#readOffset = this.#ids.length;
    return newText.slice(prefixText.length);
  }

  #decodeWindow(): { prefixText: string; newText: string } {
    const prefixText = this.#tokenizer.decode(this.#ids.slice(this.#prefixOffset, this.#readOffset), this.#options);
    const newText = this.#tokenizer.decode(this.#ids.slice(this.#prefixOffset), this.#options);
    return { prefixText, newText };
  }
}
