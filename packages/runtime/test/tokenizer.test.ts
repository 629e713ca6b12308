import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Tokenizer } from '@kiln/runtime';
import { scribe7mPath } from '@kiln/scribe-7m';

interface ScribeReference {
  prompts: { input_ids: number[]; greedy: number[] }[];
  prompts_text: string[];
}
const reference = JSON.parse(fs.readFileSync(path.join(scribe7mPath, 'reference.json'), 'utf8')) as ScribeReference;

describe('Tokenizer (scribe-7m)', () => {
  let tokenizer: Tokenizer;
  beforeAll(async () => {
    tokenizer = await Tokenizer.load(scribe7mPath);
  });

  it('encodes the reference prompts to their input ids', () => {
    expect(tokenizer.encode('In the beginning')).toEqual([934, 260, 2385]);
    reference.prompts_text.forEach((text, index) => {
      expect(tokenizer.encode(text)).toEqual(reference.prompts[index].input_ids);
    });
  });

  it('decodes the greedy continuations, with or without the end token', () => {
    const greedy = reference.prompts[0].greedy; // holds <|endoftext|> (id 0) mid-way
    expect(tokenizer.decode(greedy)).toBe(' of the Lord Jesus.\n<|endoftext|>And the disciples areheld, and the centurion, and the sons of');
    expect(tokenizer.decode(greedy, { skipSpecialTokens: true })).toBe(
      ' of the Lord Jesus.\nAnd the disciples areheld, and the centurion, and the sons of',
    );
    expect(tokenizer.decode(reference.prompts[2].greedy)).toBe(
      ' Go, let the people go round about the land of Judah, into the land of the children of Reuben, and go',
    );
  });

  it('bounds the characters one token stands for (byte-level BPE), and the bound holds', () => {
    const most = tokenizer.maxCharactersPerToken as number;
    expect(most).toBe(14); // '<|endoftext|>' is 13, the longest merge 14
    const texts = ['x'.repeat(5000), 'Amen, ye saints. '.repeat(300), '\u00e9\u4e2d\ud83d\ude00'.repeat(400), '<|endoftext|>'.repeat(50), ' '.repeat(3000), reference.prompts_text.join(' ')];
    for (const text of texts) expect(tokenizer.encode(text, { addSpecialTokens: false }).length).toBeGreaterThanOrEqual(Math.ceil(text.length / most));
  });

  it('round-trips text exactly (no clean-up of spaces before punctuation)', () => {
    const text = 'Hello , world . Is it ?';
    expect(tokenizer.decode(tokenizer.encode(text))).toBe(text);
  });
});

describe('StreamDecoder', () => {
  let tokenizer: Tokenizer;
  beforeAll(async () => {
    tokenizer = await Tokenizer.load(scribe7mPath);
  });

  function stream(ids: number[], skipSpecialTokens = false): string[] {
    const decoder = tokenizer.createStreamDecoder({ skipSpecialTokens });
    const deltas = ids.map((id) => decoder.push(id));
    deltas.push(decoder.flush());
    return deltas;
  }

  it('never splits a multi-byte character, and its deltas add up to the decoded text', () => {
    const text = 'Hi 😀 there, é! 日本語 🎉🎉 done';
    const ids = tokenizer.encode(text);
    // The byte-level BPE has no merges for these characters: the emoji takes 4 tokens, one per byte.
    expect(tokenizer.decode([ids[3]])).toBe('\uFFFD');
    const deltas = stream(ids);
    expect(deltas.join('')).toBe(text);
    for (const delta of deltas) expect(delta).not.toContain('\uFFFD');
    expect(deltas).toContain('😀'); // the emoji arrives whole, in one delta
    // A delta is empty while a character is incomplete, so some pushes return ''.
    expect(deltas.filter((delta) => delta === '').length).toBeGreaterThan(0);
  });

  it('streams the reference continuations as their decode, end token left out', () => {
    for (const prompt of reference.prompts) {
      expect(stream(prompt.greedy, true).join('')).toBe(tokenizer.decode(prompt.greedy, { skipSpecialTokens: true }));
      expect(stream(prompt.greedy, false).join('')).toBe(tokenizer.decode(prompt.greedy));
    }
  });

  it('flushes an incomplete character at the end as U+FFFD, as decode does', () => {
    const ids = tokenizer.encode('ok 😀').slice(0, -1);
    const deltas = stream(ids);
    expect(deltas.join('')).toBe(tokenizer.decode(ids));
    expect(deltas.at(-1)).toBe('\uFFFD');
  });
});

describe('Tokenizer.load errors', () => {
  let directory: string;
  beforeEach(() => {
    directory = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-tokenizer-'));
  });
  afterEach(() => fs.rmSync(directory, { recursive: true, force: true }));

  it('names a missing tokenizer.json', async () => {
    await expect(Tokenizer.load(directory)).rejects.toThrow(`${path.join(directory, 'tokenizer.json')} is missing`);
  });

  it('names a tokenizer.json that is not JSON', async () => {
    fs.writeFileSync(path.join(directory, 'tokenizer.json'), '{ "model": ');
    await expect(Tokenizer.load(directory)).rejects.toThrow(`${path.join(directory, 'tokenizer.json')} is not valid JSON`);
  });

  it('names a broken tokenizer_config.json', async () => {
    fs.copyFileSync(path.join(scribe7mPath, 'tokenizer.json'), path.join(directory, 'tokenizer.json'));
    fs.writeFileSync(path.join(directory, 'tokenizer_config.json'), '[1, 2]');
    await expect(Tokenizer.load(directory)).rejects.toThrow(
      `${path.join(directory, 'tokenizer_config.json')} must hold a JSON object`,
    );
  });

  it('loads without tokenizer_config.json, which transformers treats as optional', async () => {
    fs.copyFileSync(path.join(scribe7mPath, 'tokenizer.json'), path.join(directory, 'tokenizer.json'));
    const tokenizer = await Tokenizer.load(directory);
    expect(tokenizer.encode('In the beginning')).toEqual([934, 260, 2385]);
  });
});
