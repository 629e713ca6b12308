// Tokenizers between GGUF metadata (`tokenizer.ggml.*`, gguf.md "Tokenizer") and Hugging Face's
// tokenizer.json (what @huggingface/tokenizers and Kiln's runtime load). Two vocabularies:
//  - "gpt2": byte-level BPE (tokens already in the byte-to-unicode alphabet, merges "a b"), with the
//    pre-tokenizer regex named by `tokenizer.ggml.pre`;
//  - "llama": SentencePiece BPE (tokens with U+2581 for spaces, scores, <0xXX> byte tokens), turned into
//    the BPE-with-byte-fallback tokenizer.json transformers' LlamaConverter writes, its merges generated
//    from the scores as transformers' SentencePieceExtractor does.
import { ConfigError } from '@kiln/models';
import type { GgufMetadataEntry } from '@kiln/native';
import type { GgufModelFile } from './gguf-file';

// llama.cpp's token types (llama_token_type; gguf-py TokenType).
export const TOKEN_TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

// Pre-tokenizer regexes of the `tokenizer.ggml.pre` names Kiln knows (llama.cpp src/llama-vocab.cpp;
// the same patterns as the models' tokenizer.json files).
const PRE_TOKENIZER_REGEX: Record<string, string> = {
  'llama-bpe':
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  qwen2:
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};

export interface GgufTokenizer {
  /** tokenizer.json's object. */
  tokenizerJson: Record<string, unknown>;
  /** tokenizer_config.json's object (special tokens, add-BOS/EOS flags, chat template). */
  tokenizerConfig: Record<string, unknown>;
  bosTokenId: number | null;
  eosTokenId: number | null;
  padTokenId: number | null;
}

function tokenId(file: GgufModelFile, key: string, vocabSize: number): number | null {
  const id = file.optionalInteger(key);
  if (id === undefined) return null;
  if (id >= vocabSize) throw new ConfigError(file.path, key, `token id ${id} is outside the ${vocabSize}-token vocabulary`);
  return id;
}

/** HF merges of a SentencePiece vocabulary: transformers' generate_merges(vocab, vocab_scores). */
export function mergesFromScores(tokens: readonly string[], scores: readonly number[]): Array<[string, string]> {
  const vocab = new Map<string, number>();
  tokens.forEach((t, id) => {
    if (!vocab.has(t)) vocab.set(t, id);
  });
  const merges: Array<{ left: string; right: string; score: number; leftLength: number; rightLength: number; order: number }> = [];
  for (const [piece, id] of vocab) {
    const chars = Array.from(piece); // Python slices by code point
    const local: Array<{ left: string; right: string }> = [];
    for (let i = 1; i < chars.length; i++) {
      const left = chars.slice(0, i).join('');
      const right = chars.slice(i).join('');
      if (vocab.has(left) && vocab.has(right)) local.push({ left, right });
    }
    local.sort((a, b) => vocab.get(a.left)! - vocab.get(b.left)! || vocab.get(a.right)! - vocab.get(b.right)!);
    for (const m of local) {
      merges.push({ ...m, score: scores[id], leftLength: Array.from(m.left).length, rightLength: Array.from(m.right).length, order: merges.length });
    }
  }
  // sorted(..., key=(score, len(left), len(right)), reverse=True): Python's sort is stable, and reverse
  // keeps equal keys in their original order.
  merges.sort((a, b) => b.score - a.score || b.leftLength - a.leftLength || b.rightLength - a.rightLength || a.order - b.order);
  return merges.map((m) => [m.left, m.right]);
}

function templateProcessor(bos: string | null, eos: string | null, ids: { bos: number | null; eos: number | null }): Record<string, unknown> {
  const single: unknown[] = [];
  const pair: unknown[] = [];
  const special: Record<string, unknown> = {};
  if (bos !== null && ids.bos !== null) {
    single.push({ SpecialToken: { id: bos, type_id: 0 } });
    pair.push({ SpecialToken: { id: bos, type_id: 0 } });
    special[bos] = { id: bos, ids: [ids.bos], tokens: [bos] };
  }
  single.push({ Sequence: { id: 'A', type_id: 0 } });
  pair.push({ Sequence: { id: 'A', type_id: 0 } });
  if (eos !== null && ids.eos !== null) {
    single.push({ SpecialToken: { id: eos, type_id: 0 } });
    pair.push({ SpecialToken: { id: eos, type_id: 0 } });
    special[eos] = { id: eos, ids: [ids.eos], tokens: [eos] };
  }
  if (bos !== null && ids.bos !== null) pair.push({ SpecialToken: { id: bos, type_id: 1 } });
  pair.push({ Sequence: { id: 'B', type_id: 1 } });
  if (eos !== null && ids.eos !== null) pair.push({ SpecialToken: { id: eos, type_id: 1 } });
  return { type: 'TemplateProcessing', single, pair, special_tokens: special };
}

/** The tokenizer of a GGUF file as tokenizer.json + tokenizer_config.json. */
export function tokenizerFromGguf(file: GgufModelFile): GgufTokenizer {
  const model = file.string('tokenizer.ggml.model');
  const tokens = file.optionalStringArray('tokenizer.ggml.tokens');
  if (!tokens || tokens.length === 0) throw new ConfigError(file.path, 'tokenizer.ggml.tokens', 'missing or empty');
  const types = file.optionalNumberArray('tokenizer.ggml.token_type') ?? tokens.map(() => TOKEN_TYPE.NORMAL);
  if (types.length !== tokens.length) {
    throw new ConfigError(file.path, 'tokenizer.ggml.token_type', `has ${types.length} entries for ${tokens.length} tokens`);
  }
  const n = tokens.length;
  const bosTokenId = tokenId(file, 'tokenizer.ggml.bos_token_id', n);
  const eosTokenId = tokenId(file, 'tokenizer.ggml.eos_token_id', n);
  const padTokenId = tokenId(file, 'tokenizer.ggml.padding_token_id', n);
  const unknownTokenId = tokenId(file, 'tokenizer.ggml.unknown_token_id', n);
  // llama.cpp's defaults: SentencePiece vocabularies add BOS, GPT-2 style ones do not.
  const addBos = file.optionalBoolean('tokenizer.ggml.add_bos_token') ?? model === 'llama';
  const addEos = file.optionalBoolean('tokenizer.ggml.add_eos_token') ?? false;

  const vocab: Record<string, number> = Object.create(null) as Record<string, number>;
  const addedTokens: unknown[] = [];
  tokens.forEach((token, id) => {
    if (!(token in vocab)) vocab[token] = id;
    const type = types[id];
    if (type === TOKEN_TYPE.CONTROL || type === TOKEN_TYPE.USER_DEFINED || type === TOKEN_TYPE.UNKNOWN) {
      addedTokens.push({
        id,
        content: token,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: type === TOKEN_TYPE.USER_DEFINED && model === 'llama',
        special: type !== TOKEN_TYPE.USER_DEFINED,
      });
    }
  });
  const name = (id: number | null) => (id === null ? null : tokens[id]);
  const postProcessor = templateProcessor(addBos ? name(bosTokenId) : null, addEos ? name(eosTokenId) : null, {
    bos: bosTokenId,
    eos: eosTokenId,
  });

  let tokenizerJson: Record<string, unknown>;
  if (model === 'gpt2') {
    const merges = file.optionalStringArray('tokenizer.ggml.merges');
    if (!merges) throw new ConfigError(file.path, 'tokenizer.ggml.merges', 'missing (a "gpt2" tokenizer needs its merges)');
    const pre = file.optionalString('tokenizer.ggml.pre') ?? 'gpt-2';
    let preTokenizer: Record<string, unknown>;
    if (pre === 'gpt-2' || pre === 'default') {
      preTokenizer = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
    } else if (pre in PRE_TOKENIZER_REGEX) {
      preTokenizer = {
        type: 'Sequence',
        pretokenizers: [
          { type: 'Split', pattern: { Regex: PRE_TOKENIZER_REGEX[pre] }, behavior: 'Isolated', invert: false },
          { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
        ],
      };
    } else {
      throw new ConfigError(
        file.path,
        'tokenizer.ggml.pre',
        `"${pre}" is not a pre-tokenizer Kiln knows (gpt-2, default, ${Object.keys(PRE_TOKENIZER_REGEX).join(', ')})`,
      );
    }
    tokenizerJson = {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: addedTokens,
      normalizer: null,
      pre_tokenizer: preTokenizer,
      post_processor: postProcessor,
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: {
        type: 'BPE',
        dropout: null,
        unk_token: null,
        continuing_subword_prefix: null,
        end_of_word_suffix: null,
        fuse_unk: false,
        byte_fallback: false,
        ignore_merges: false,
        vocab,
        merges: merges.map((m, i) => {
          const parts = m.split(' ');
          if (parts.length !== 2) throw new ConfigError(file.path, `tokenizer.ggml.merges[${i}]`, `${JSON.stringify(m)} is not "left right"`);
          return parts;
        }),
      },
    };
  } else if (model === 'llama') {
    const scores = file.optionalNumberArray('tokenizer.ggml.scores');
    if (!scores || scores.length !== n) {
      throw new ConfigError(file.path, 'tokenizer.ggml.scores', `must hold one score per token (${n})`);
    }
    const addSpacePrefix = file.optionalBoolean('tokenizer.ggml.add_space_prefix') ?? true;
    const normalizers: unknown[] = [];
    if (addSpacePrefix) normalizers.push({ type: 'Prepend', prepend: '\u2581' });
    normalizers.push({ type: 'Replace', pattern: { String: ' ' }, content: '\u2581' });
    const decoders: unknown[] = [
      { type: 'Replace', pattern: { String: '\u2581' }, content: ' ' },
      { type: 'ByteFallback' },
      { type: 'Fuse' },
    ];
    if (addSpacePrefix) decoders.push({ type: 'Strip', content: ' ', start: 1, stop: 0 });
    tokenizerJson = {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: addedTokens,
      normalizer: { type: 'Sequence', normalizers },
      pre_tokenizer: null,
      post_processor: postProcessor,
      decoder: { type: 'Sequence', decoders },
      model: {
        type: 'BPE',
        dropout: null,
        unk_token: unknownTokenId === null ? null : tokens[unknownTokenId],
        continuing_subword_prefix: null,
        end_of_word_suffix: null,
        fuse_unk: true,
        byte_fallback: true,
        ignore_merges: false,
        vocab,
        merges: mergesFromScores(tokens, scores),
      },
    };
  } else {
    throw new ConfigError(file.path, 'tokenizer.ggml.model', `"${model}" is not supported (gpt2 or llama)`);
  }

  const tokenizerConfig: Record<string, unknown> = {
    add_bos_token: addBos,
    add_eos_token: addEos,
    bos_token: name(bosTokenId),
    eos_token: name(eosTokenId),
    pad_token: name(padTokenId),
    unk_token: name(unknownTokenId),
    // transformers would strip spaces around punctuation in decode otherwise; llama.cpp never does.
    clean_up_tokenization_spaces: false,
  };
  const chatTemplate = file.optionalString('tokenizer.chat_template');
  if (chatTemplate !== undefined) tokenizerConfig.chat_template = chatTemplate;
  return { tokenizerJson, tokenizerConfig, bosTokenId, eosTokenId, padTokenId };
}

// ---- Export: tokenizer.json -> tokenizer.ggml.* --------------------------------------------------------

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * GGUF tokenizer metadata of a byte-level BPE tokenizer.json (GPT-2 style, as scribe-7m's), the way
 * llama.cpp's convert_hf_to_gguf.py writes it: every id of the model's vocabulary (ids the tokenizer does
 * not define become "[PAD<id>]" of type UNUSED), added tokens as CONTROL (special) or USER_DEFINED.
 */
export function ggufTokenizerMetadata(
  file: string,
  tokenizer: unknown,
  vocabSize: number,
  ids: { bos: number | null; eos: number | null; pad: number | null; addBos: boolean },
  chatTemplate: string | undefined,
): GgufMetadataEntry[] {
  if (!isObject(tokenizer) || !isObject(tokenizer.model) || tokenizer.model.type !== 'BPE') {
    throw new ConfigError(file, 'model.type', 'the GGUF export supports byte-level BPE tokenizers (model.type "BPE")');
  }
  const pre = tokenizer.pre_tokenizer;
  let preName: string;
  if (isObject(pre) && pre.type === 'ByteLevel' && pre.use_regex !== false) {
    preName = 'gpt-2';
  } else if (
    isObject(pre) &&
    pre.type === 'Sequence' &&
    Array.isArray(pre.pretokenizers) &&
    pre.pretokenizers.length === 2 &&
    isObject(pre.pretokenizers[0]) &&
    isObject(pre.pretokenizers[0].pattern) &&
    isObject(pre.pretokenizers[1]) &&
    pre.pretokenizers[1].type === 'ByteLevel'
  ) {
    const regex = pre.pretokenizers[0].pattern.Regex;
    const found = Object.entries(PRE_TOKENIZER_REGEX).find(([, r]) => r === regex);
    if (!found) throw new ConfigError(file, 'pre_tokenizer', 'its Split regex is not one llama.cpp names (llama-bpe, qwen2)');
    preName = found[0];
  } else {
    throw new ConfigError(file, 'pre_tokenizer', 'must be ByteLevel (GPT-2 regex) or Split + ByteLevel for the GGUF export');
  }
  const model = tokenizer.model;
  if (!isObject(model.vocab)) throw new ConfigError(file, 'model.vocab', 'expected an object');
  const tokens = new Array<string | undefined>(vocabSize).fill(undefined);
  const types = new Array<number>(vocabSize).fill(TOKEN_TYPE.NORMAL);
  for (const [text, id] of Object.entries(model.vocab)) {
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0 || id >= vocabSize) {
      throw new ConfigError(file, `model.vocab[${JSON.stringify(text)}]`, `id ${String(id)} is outside [0, ${vocabSize})`);
    }
    tokens[id] = text;
  }
  const added = Array.isArray(tokenizer.added_tokens) ? tokenizer.added_tokens : [];
  added.forEach((token, i) => {
    if (!isObject(token) || typeof token.content !== 'string' || typeof token.id !== 'number' || token.id < 0 || token.id >= vocabSize) {
      throw new ConfigError(file, `added_tokens[${i}]`, `needs a content string and an id in [0, ${vocabSize})`);
    }
    tokens[token.id] = token.content;
    types[token.id] = token.special === true ? TOKEN_TYPE.CONTROL : TOKEN_TYPE.USER_DEFINED;
  });
  for (let id = 0; id < vocabSize; id++) {
    if (tokens[id] === undefined) {
      tokens[id] = `[PAD${id}]`;
      types[id] = TOKEN_TYPE.UNUSED;
    }
  }
  const merges = (Array.isArray(model.merges) ? model.merges : []).map((merge: unknown, i: number) => {
    if (typeof merge === 'string') return merge;
    if (Array.isArray(merge) && merge.length === 2 && merge.every((p) => typeof p === 'string')) return `${merge[0]} ${merge[1]}`;
    throw new ConfigError(file, `model.merges[${i}]`, 'is neither "a b" nor ["a", "b"]');
  });
  const entries: GgufMetadataEntry[] = [
    { key: 'tokenizer.ggml.model', type: 'STRING', value: 'gpt2' },
    { key: 'tokenizer.ggml.pre', type: 'STRING', value: preName },
    { key: 'tokenizer.ggml.tokens', type: 'ARRAY', itemType: 'STRING', value: tokens as string[] },
    { key: 'tokenizer.ggml.token_type', type: 'ARRAY', itemType: 'INT32', value: types },
    { key: 'tokenizer.ggml.merges', type: 'ARRAY', itemType: 'STRING', value: merges },
    { key: 'tokenizer.ggml.add_bos_token', type: 'BOOL', value: ids.addBos },
  ];
  if (ids.bos !== null) entries.push({ key: 'tokenizer.ggml.bos_token_id', type: 'UINT32', value: ids.bos });
  if (ids.eos !== null) entries.push({ key: 'tokenizer.ggml.eos_token_id', type: 'UINT32', value: ids.eos });
  if (ids.pad !== null) entries.push({ key: 'tokenizer.ggml.padding_token_id', type: 'UINT32', value: ids.pad });
  if (chatTemplate !== undefined) entries.push({ key: 'tokenizer.chat_template', type: 'STRING', value: chatTemplate });
  return entries;
}
