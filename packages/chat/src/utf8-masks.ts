// Well-formed UTF-8 for grammar-constrained output (docs/decisions/0011-structured-output-with-xgrammar.md).
//
// xgrammar 0.1.27 matches a non-ASCII character of a negated character class (`[^"\\]`, the inside of
// every JSON string) by its first byte alone: any byte C0–F7 opens it and any bytes 80–BF complete it
// (earley_parser.cc: "character class can't accept a UTF8 character, unless it has a negation"). With
// byte-level tokens (GPT-2, Llama 3, Qwen byte tokens; Llama 2's <0xNN>) a sampled model can then write
// overlong forms (C0 9B, E0 85 9F), surrogates (ED A0 80) or code points past U+10FFFF (F6 90 A2 9E):
// bytes that decode to U+FFFD, one per byte, which break length bounds and patterns. Each mask is
// therefore intersected with the tokens that keep the output well-formed UTF-8 (RFC 3629), given the
// bytes of the character in progress.
import type { GrammarVocabulary } from './guided-decoding';

/**
 * The states of a UTF-8 decoder between bytes: what the next byte must be.
 * 0: at a character boundary; 1: one continuation byte left; 2: two left; 3: two left, the first
 * A0–BF (after E0); 4: two left, the first 80–9F (after ED); 5: three left; 6: three left, the first
 * 90–BF (after F0); 7: three left, the first 80–8F (after F4).
 */
const STATES = 8;

/** The state after `byte` in `state`, or -1 where the byte makes the text ill-formed. */
export function utf8Step(state: number, byte: number): number {
  switch (state) {
    case 0:
      if (byte < 0x80) return 0;
      if (byte >= 0xc2 && byte <= 0xdf) return 1;
      if (byte === 0xe0) return 3;
      if (byte === 0xed) return 4;
      if (byte >= 0xe1 && byte <= 0xef) return 2;
      if (byte === 0xf0) return 6;
      if (byte >= 0xf1 && byte <= 0xf3) return 5;
      if (byte === 0xf4) return 7;
      return -1;
    case 1:
      return byte >= 0x80 && byte <= 0xbf ? 0 : -1;
    case 2:
      return byte >= 0x80 && byte <= 0xbf ? 1 : -1;
    case 3:
      return byte >= 0xa0 && byte <= 0xbf ? 1 : -1;
    case 4:
      return byte >= 0x80 && byte <= 0x9f ? 1 : -1;
    case 5:
      return byte >= 0x80 && byte <= 0xbf ? 2 : -1;
    case 6:
      return byte >= 0x90 && byte <= 0xbf ? 2 : -1;
    case 7:
      return byte >= 0x80 && byte <= 0x8f ? 2 : -1;
    default:
      return -1;
  }
}

/** GPT-2's byte-to-character alphabet, inverted: code point -> byte. */
function byteLevelAlphabet(): Map<number, number> {
  const map = new Map<number, number>();
  let extra = 0;
  for (let byte = 0; byte < 256; byte++) {
    const printable = (byte >= 33 && byte <= 126) || (byte >= 161 && byte <= 172) || (byte >= 174 && byte <= 255);
    map.set(printable ? byte : 256 + extra++, byte);
  }
  return map;
}

/**
 * The bytes a token writes, as xgrammar's TokenizerInfo decodes it (tokenizer_info.cc): ByteLevel
 * through the GPT-2 alphabet (a token with a character outside it stays as it is), ByteFallback's
 * <0xNN> as one byte and ▁ as a space, raw strings as their UTF-8.
 */
export function tokenBytes(token: string, kind: GrammarVocabulary['kind'], alphabet = byteLevelAlphabet()): Uint8Array {
  if (kind === 'byte_level') {
    const bytes: number[] = [];
    for (const character of token) {
      const byte = alphabet.get(character.codePointAt(0) as number);
      if (byte === undefined) return Buffer.from(token, 'utf8');
      bytes.push(byte);
    }
    return Uint8Array.from(bytes);
  }
  if (kind === 'byte_fallback') {
    if (/^<0x[0-9A-F]{2}>$/.test(token)) return Uint8Array.of(parseInt(token.slice(3, 5), 16));
    return Buffer.from(token.replaceAll('\u2581', ' '), 'utf8');
  }
  return Buffer.from(token, 'utf8');
}

/** Per tokenizer: for each decoder state, the tokens allowed in it and the state each leads to. */
export class Utf8Masks {
  readonly #vocabSize: number;
  // #next[state * vocabSize + token]: the state after the token, -1 where not allowed.
  readonly #next: Int8Array;
  readonly #allowed: Uint32Array[];

  private constructor(vocabSize: number, next: Int8Array, allowed: Uint32Array[]) {
    this.#vocabSize = vocabSize;
    this.#next = next;
    this.#allowed = allowed;
  }

  /**
   * `stopTokenIds`, special tokens (an empty string) and ids past the tokenizer's write no byte: they
   * are allowed only at a character boundary.
   */
  static of(vocabulary: GrammarVocabulary, vocabSize: number, stopTokenIds: readonly number[]): Utf8Masks {
    const next = new Int8Array(STATES * vocabSize).fill(-1);
    const words = Math.ceil(vocabSize / 32);
    const allowed = Array.from({ length: STATES }, () => new Uint32Array(words));
    const stops = new Set(stopTokenIds);
    const alphabet = byteLevelAlphabet();
    for (let token = 0; token < vocabSize; token++) {
      const text = vocabulary.tokens[token] ?? '';
      const bytes = text === '' || stops.has(token) ? undefined : tokenBytes(text, vocabulary.kind, alphabet);
      for (let state = 0; state < STATES; state++) {
        let end = bytes === undefined ? (state === 0 ? 0 : -1) : state;
        for (let i = 0; bytes !== undefined && i < bytes.length && end >= 0; i++) end = utf8Step(end, bytes[i]);
        if (end < 0) continue;
        next[state * vocabSize + token] = end;
        allowed[state][token >>> 5] |= 1 << (token & 31);
      }
    }
    return new Utf8Masks(vocabSize, next, allowed);
  }

  /** The state after `token` in `state`; -1 where the token makes the output ill-formed. */
  next(state: number, token: number): number {
    if (state < 0 || state >= STATES || !Number.isInteger(token) || token < 0 || token >= this.#vocabSize) return -1;
    return this.#next[state * this.#vocabSize + token];
  }

  /** Clears from `mask` (one bit per token) the tokens not allowed in `state`. */
  restrict(mask: Uint32Array, state: number): void {
    const allowed = this.#allowed[state];
    const words = Math.min(mask.length, allowed.length);
    for (let i = 0; i < words; i++) mask[i] &= allowed[i];
  }
}
