// GGUF tokenizers to tokenizer.json: a 2,000-token text encodes and decodes exactly as the original, for
// scribe-7m's GPT-2 style byte-level BPE (original: its own tokenizer.json) and for a SentencePiece-style
// llama vocabulary built here (original: llama.cpp's SentencePiece algorithm, written below).
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { loadNative } from '@kiln/native';
import { convertCheckpoint, exportGguf, GgufModelFile, TOKEN_TYPE, tokenizerFromGguf } from '@kiln/convert';
import { ggufBytes } from './gguf-files';

const SCRIBE = path.resolve(__dirname, '../../scribe-7m/model');
let root: string;
beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-gguf-tokenizer-'));
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

/** A deterministic text: words, numbers, punctuation, runs of spaces, new lines, accents, CJK, emoji. */
function makeText(words: number, seed: number): string {
  const vocabulary = [
    'the', 'LORD', 'said', 'unto', 'Moses,', 'and', 'of', 'in', 'heaven', 'earth.', 'Behold', "it's", "don't",
    'children', 'Israel;', 'went', 'out', 'from', 'Egypt:', '1234', '42', '3.14159', '(verse', '7)', '"quoted"',
    'naïve', 'café', 'Æsir', 'über', '日本語', '中文', '🙂', '🔥🔥', '—', '...', '  ', '\n', '\n\n', '\t', 'x=y+1;',
    'https://example.com/a?b=c', 'UPPER', 'lower', 'MiXeD', '#hash', '@user', 'e-mail', '$100', '100%',
  ];
  let s = seed;
  const next = () => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return s;
  };
  const out: string[] = [];
  for (let i = 0; i < words; i++) out.push(vocabulary[next() % vocabulary.length]);
  return out.join(' ');
}

/** A text of the generator that `encode` turns into at least 2,000 tokens (sized from a sample). */
function text2000(encode: (text: string) => number[]): { text: string; tokens: number } {
  const perWord = encode(makeText(200, 7)).length / 200;
  for (let words = Math.ceil(2000 / perWord); ; words += 50) {
    const text = makeText(words, 7);
    const tokens = encode(text).length;
    if (tokens >= 2000) return { text, tokens };
  }
}

test('scribe-7m (GPT-2 style BPE): exported to GGUF and back, 2,000 tokens encode and decode exactly as the original', async () => {
  const checkpoint = path.join(root, 'scribe-ckpt');
  await convertCheckpoint({ modelDir: SCRIBE, outputDir: checkpoint });
  const gguf = path.join(root, 'scribe.gguf');
  await exportGguf({ checkpointDir: checkpoint, outputFile: gguf, type: 'q4_0' });
  const converted = tokenizerFromGguf(await GgufModelFile.read(gguf, loadNative()));
  const original = new Tokenizer(
    JSON.parse(await fs.readFile(path.join(SCRIBE, 'tokenizer.json'), 'utf8')),
    JSON.parse(await fs.readFile(path.join(SCRIBE, 'tokenizer_config.json'), 'utf8')),
  );
  const roundTripped = new Tokenizer(converted.tokenizerJson, converted.tokenizerConfig);
  const { text, tokens } = text2000((t) => original.encode(t).ids);
  expect(tokens).toBeGreaterThanOrEqual(2000);
  const ids = original.encode(text).ids;
  expect(roundTripped.encode(text).ids).toEqual(ids);
  // Kiln's runtime decodes as transformers 5 does, without clean_up_tokenization_spaces.
  const decode = (t: Tokenizer) => t.decode(ids, { clean_up_tokenization_spaces: false });
  expect(decode(roundTripped)).toBe(decode(original));
  expect(decode(roundTripped)).toBe(text);
  expect(converted.eosTokenId).toBe(0);
});

// ---- A SentencePiece-style (llama) vocabulary and llama.cpp's algorithm over it --------------------

const SPACE = '\u2581';

/** SentencePiece BPE training in miniature: most frequent adjacent pair within words, `merges` times. */
function trainSentencePiece(corpus: string, merges: number): { tokens: string[]; scores: number[]; types: number[] } {
  const normalized = SPACE + corpus.replaceAll(' ', SPACE);
  // Words start at each U+2581 (SentencePiece never merges across one).
  const words = normalized.split(new RegExp(`(?=${SPACE})`)).map((w) => Array.from(w));
  const counts = new Map<string, number>();
  for (const w of words) for (const c of w) counts.set(c, (counts.get(c) ?? 0) + 1);
  // Characters past U+2000 (CJK, emoji, the dash) stay out of the vocabulary, so the byte fallback is
  // exercised; U+2581 itself is in.
  const chars = [...counts].filter(([c]) => c === SPACE || c.codePointAt(0)! < 0x2000).map(([c]) => c).sort();
  const tokens = ['<unk>', '<s>', '</s>'];
  const types: number[] = [TOKEN_TYPE.UNKNOWN, TOKEN_TYPE.CONTROL, TOKEN_TYPE.CONTROL];
  const scores = [0, 0, 0];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(TOKEN_TYPE.BYTE);
    scores.push(0);
  }
  chars.forEach((c, i) => {
    tokens.push(c);
    types.push(TOKEN_TYPE.NORMAL);
    scores.push(-1e6 - i);
  });
  const known = new Set(chars);
  let segmented = words.map((w) => w.filter(() => true));
  for (let m = 0; m < merges; m++) {
    const pairs = new Map<string, number>();
    for (const w of segmented) {
      for (let i = 0; i + 1 < w.length; i++) {
        if (!known.has(w[i]) || !known.has(w[i + 1])) continue;
        const key = `${w[i]}\u0000${w[i + 1]}`;
        pairs.set(key, (pairs.get(key) ?? 0) + 1);
      }
    }
    let best: string | undefined;
    let bestCount = 1;
    for (const [key, n] of pairs) {
      if (n > bestCount || (n === bestCount && best !== undefined && key < best)) {
        best = key;
        bestCount = n;
      }
    }
    if (!best) break;
    const [l, r] = best.split('\u0000');
    const piece = l + r;
    if (!known.has(piece)) {
      known.add(piece);
      tokens.push(piece);
      types.push(TOKEN_TYPE.NORMAL);
      scores.push(-m); // earlier merges score higher, as SentencePiece's BPE trainer assigns them
    }
    segmented = segmented.map((w) => {
      const out: string[] = [];
      for (let i = 0; i < w.length; i++) {
        if (i + 1 < w.length && w[i] === l && w[i + 1] === r) {
          out.push(piece);
          i++;
        } else {
          out.push(w[i]);
        }
      }
      return out;
    });
  }
  return { tokens, scores, types };
}

/**
 * llama.cpp's llm_tokenizer_spm: the text with a space prefix and spaces as U+2581, split into characters;
 * repeatedly merge the adjacent pair whose concatenation is a piece of the highest score (leftmost on
 * ties); pieces left outside the vocabulary become their UTF-8 bytes' <0xXX> tokens.
 */
function spmEncode(text: string, vocab: { tokens: string[]; scores: number[] }): number[] {
  const ids = new Map<string, number>();
  vocab.tokens.forEach((t, i) => {
    if (!ids.has(t)) ids.set(t, i);
  });
  // No piece of this vocabulary holds U+2581 past its first character, so no merge crosses the point
  // before a U+2581: the text can be encoded word by word (and each distinct word once) with the same
  // result as llama.cpp's pass over the whole text.
  expect(vocab.tokens.some((t) => t.indexOf(SPACE, 1) > 0)).toBe(false);
  const cache = new Map<string, number[]>();
  const encodeWord = (word: string): number[] => {
    const symbols = Array.from(word);
    for (;;) {
      let best = -1;
      let bestScore = -Infinity;
      for (let i = 0; i + 1 < symbols.length; i++) {
        const id = ids.get(symbols[i] + symbols[i + 1]);
        if (id !== undefined && vocab.scores[id] > bestScore) {
          best = i;
          bestScore = vocab.scores[id];
        }
      }
      if (best < 0) break;
      symbols.splice(best, 2, symbols[best] + symbols[best + 1]);
    }
    const out: number[] = [];
    for (const s of symbols) {
      const id = ids.get(s);
      if (id !== undefined) out.push(id);
      else for (const byte of Buffer.from(s, 'utf8')) out.push(ids.get(`<0x${byte.toString(16).toUpperCase().padStart(2, '0')}>`)!);
    }
    return out;
  };
  const words = (SPACE + text.replaceAll(' ', SPACE)).split(new RegExp(`(?=${SPACE})`));
  return words.flatMap((word) => {
    let encoded = cache.get(word);
    if (!encoded) cache.set(word, (encoded = encodeWord(word)));
    return encoded;
  });
}

test('a SentencePiece-style llama vocabulary: 2,000 tokens encode and decode exactly as llama.cpp\'s algorithm', async () => {
  const corpus = makeText(3000, 11);
  const vocab = trainSentencePiece(corpus, 300);
  const file = path.join(root, 'spm.gguf');
  await fs.writeFile(
    file,
    ggufBytes(
      {
        'general.architecture': { type: 'STRING', value: 'llama' },
        'tokenizer.ggml.model': { type: 'STRING', value: 'llama' },
        'tokenizer.ggml.tokens': { type: 'ARRAY', itemType: 'STRING', value: vocab.tokens },
        'tokenizer.ggml.scores': { type: 'ARRAY', itemType: 'FLOAT32', value: vocab.scores },
        'tokenizer.ggml.token_type': { type: 'ARRAY', itemType: 'INT32', value: vocab.types },
        'tokenizer.ggml.bos_token_id': { type: 'UINT32', value: 1 },
        'tokenizer.ggml.eos_token_id': { type: 'UINT32', value: 2 },
        'tokenizer.ggml.unknown_token_id': { type: 'UINT32', value: 0 },
        'tokenizer.ggml.add_bos_token': { type: 'BOOL', value: true },
        'tokenizer.chat_template': { type: 'STRING', value: '{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}' },
      },
      [],
    ),
  );
  const converted = tokenizerFromGguf(await GgufModelFile.read(file, loadNative()));
  expect(converted.tokenizerConfig.chat_template).toContain('bos_token');
  const tokenizer = new Tokenizer(converted.tokenizerJson, converted.tokenizerConfig);
  const { text, tokens } = text2000((t) => spmEncode(t, vocab));
  expect(tokens).toBeGreaterThanOrEqual(2000);
  const expected = spmEncode(text, vocab);
  // Byte fallback happens (the emoji and CJK characters are not pieces) and merges happen.
  expect(expected.some((id) => vocab.types[id] === TOKEN_TYPE.BYTE)).toBe(true);
  expect(expected.length).toBeLessThan(Array.from(text).length / 2);
  expect(tokenizer.encode(text).ids).toEqual([1, ...expected]);
  expect(tokenizer.decode([1, ...expected], { skip_special_tokens: true, clean_up_tokenization_spaces: false })).toBe(text);
});
