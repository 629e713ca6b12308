// The UTF-8 decoder states that keep constrained output well-formed (src/utf8-masks.ts), checked
// against Node's own fatal decoder, and the masks built from a vocabulary.
import { tokenBytes, Utf8Masks, utf8Step } from '../src/utf8-masks';

const decoder = new TextDecoder('utf-8', { fatal: true });

/** What utf8Step says of a byte sequence: ill-formed, complete, or a well-formed prefix. */
function classify(bytes: number[]): 'bad' | 'complete' | 'prefix' {
  let state = 0;
  for (const byte of bytes) {
    state = utf8Step(state, byte);
    if (state < 0) return 'bad';
  }
  return state === 0 ? 'complete' : 'prefix';
}

function decodes(bytes: number[]): boolean {
  try {
    decoder.decode(Uint8Array.from(bytes));
    return true;
  } catch {
    return false;
  }
}

describe('utf8Step', () => {
  it('accepts exactly the sequences a fatal decoder accepts (every 1- and 2-byte sequence)', () => {
    const wrong: number[][] = [];
    for (let a = 0; a < 256; a++) {
      if ((classify([a]) === 'complete') !== decodes([a])) wrong.push([a]);
      for (let b = 0; b < 256; b++) if ((classify([a, b]) === 'complete') !== decodes([a, b])) wrong.push([a, b]);
    }
    expect(wrong).toEqual([]);
  });

  it('3- and 4-byte sequences: complete iff decodable, and a well-formed prefix completes', () => {
    const leads = [0xe0, 0xe1, 0xec, 0xed, 0xee, 0xef, 0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xc0, 0xc1, 0xc2];
    const wrong: number[][] = [];
    for (const a of leads) {
      for (let b = 0x70; b < 0xd0; b++) {
        for (let c = 0x70; c < 0xd0; c += 3) {
          if ((classify([a, b, c]) === 'complete') !== decodes([a, b, c])) wrong.push([a, b, c]);
          if ((classify([a, b, c, 0x80]) === 'complete') !== decodes([a, b, c, 0x80])) wrong.push([a, b, c, 0x80]);
          if (classify([a, b, c]) === 'prefix' && !decodes([a, b, c, 0x80]) && !decodes([a, b, c, 0x90])) wrong.push([a, b, c]);
        }
      }
    }
    expect(wrong).toEqual([]);
  });
});

describe('Utf8Masks', () => {
  it('allows a token by the bytes of the character in progress (byte-level vocabulary)', () => {
    // GPT-2's alphabet: printable bytes stand for themselves ('à' E0, '¿' BF, 'À' C0), the others
    // are U+0100 on in order ('Ġ' 20, 'Ł' 9F, 'ł' A0).
    const tokens = ['<|end|>', 'a', 'Ġb', '\u00e0', '\u0142', '\u0141', '\u00bf', '\u00c0', '\u00e0\u0142\u00bf', '', '\u00a0'];
    const masks = Utf8Masks.of({ tokens, kind: 'byte_level', prependSpace: false }, 12, [0]);
    const allowedIn = (state: number): number[] => {
      const mask = new Uint32Array(1).fill(0xffffffff);
      masks.restrict(mask, state);
      return [...Array(12).keys()].filter((id) => (mask[0] >>> id) & 1);
    };
    expect(tokenBytes('\u0141', 'byte_level')).toEqual(Uint8Array.of(0x9f));
    // At a boundary: ASCII, the lead E0, a whole character; not a lone continuation byte nor C0.
    // U+00A0 is not in the alphabet: the token is its own UTF-8 (C2 A0). Id 11 has no token.
    expect(tokenBytes('\u00a0', 'byte_level')).toEqual(Uint8Array.of(0xc2, 0xa0));
    expect(allowedIn(0)).toEqual([0, 1, 2, 3, 8, 9, 10, 11]);
    const afterE0 = masks.next(0, 3);
    expect(afterE0).toBe(3);
    // After E0: A0-BF only (80-9F would be an overlong form); no end token mid-character.
    expect(allowedIn(afterE0)).toEqual([4, 6]);
    expect(masks.next(masks.next(afterE0, 4), 6)).toBe(0);
    expect(masks.next(afterE0, 5)).toBe(-1);
  });

  it('byte-fallback tokens (<0xNN>) and raw vocabularies', () => {
    expect(tokenBytes('<0xE2>', 'byte_fallback')).toEqual(Uint8Array.of(0xe2));
    expect(tokenBytes('\u2581the', 'byte_fallback')).toEqual(Uint8Array.from(Buffer.from(' the')));
    const masks = Utf8Masks.of({ tokens: ['<s>', '<0xE2>', '<0x82>', '<0xAC>', 'é'], kind: 'byte_fallback', prependSpace: true }, 5, [0]);
    let state = masks.next(0, 1);
    expect(masks.next(state, 4)).toBe(-1);
    state = masks.next(masks.next(state, 2), 3); // E2 82 AC: €
    expect(state).toBe(0);
    expect(masks.next(0, 4)).toBe(0);
  });
});
