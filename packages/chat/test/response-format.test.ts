// @kiln/chat without a model: responseFormat checks (every refusal names its path), and grammars
// compiled for scribe-7m's tokenizer driven by random draws among the allowed tokens, whose text must
// be what the format asks for.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Ajv2020 from 'ajv/dist/2020';
import addFormats from 'ajv-formats';
import { scribe7mPath } from '@kiln/scribe-7m';
import { grammarVocabularyOf, GuidedDecoding, ResponseFormatError, validateResponseFormat, type ResponseFormat } from '@kiln/chat';
import { integerRangeRule } from '../src/guided-decoding';

const tokenizerJson = JSON.parse(readFileSync(join(scribe7mPath, 'tokenizer.json'), 'utf8')) as Record<string, unknown>;
const VOCAB = 4096;
let guided: GuidedDecoding;

beforeAll(async () => {
  guided = await GuidedDecoding.create(grammarVocabularyOf(tokenizerJson, VOCAB), VOCAB, [0]);
});
afterAll(() => guided?.dispose());

describe('validateResponseFormat', () => {
  it.each<[unknown, string]>([
    [null, 'responseFormat'],
    [{ type: 'yaml' }, 'responseFormat.type'],
    [{ type: 'json_object', strict: true }, 'responseFormat.strict'],
    [{ type: 'json_schema' }, 'responseFormat.schema'],
    [{ type: 'json_schema', schema: { type: 'object', properties: { a: { not: {} } } } }, 'responseFormat.schema.properties.a.not'],
    [{ type: 'json_schema', schema: { oneOf: [{ type: 'integer' }] } }, 'responseFormat.schema.oneOf'],
    [{ type: 'json_schema', schema: { allOf: [{ type: 'integer' }, { type: 'integer' }] } }, 'responseFormat.schema.allOf'],
    [{ type: 'json_schema', schema: { type: 'number', minimum: 1.5 } }, 'responseFormat.schema.minimum'],
    [{ type: 'json_schema', schema: { type: 'string', format: 'email' } }, 'responseFormat.schema.format'],
    [{ type: 'json_schema', schema: { type: 'string', format: 'date', maxLength: 3 } }, 'responseFormat.schema.maxLength'],
    [{ type: 'json_schema', schema: { type: 'string', maxLength: 5000 } }, 'responseFormat.schema.maxLength'],
    [{ type: 'json_schema', schema: { type: 'array', minItems: 3, maxItems: 2 } }, 'responseFormat.schema.minItems'],
    [{ type: 'regex', pattern: '' }, 'responseFormat.pattern'],
    [{ type: 'grammar', grammar: 'x'.repeat(70000) }, 'responseFormat.grammar'],
  ])('case %#, refused at the path given', (format, path) => {
    expect(() => validateResponseFormat(format)).toThrow(ResponseFormatError);
    try {
      validateResponseFormat(format);
    } catch (error) {
      expect((error as ResponseFormatError).path).toBe(path);
    }
  });

  it('bounds the depth of a schema', () => {
    let schema: Record<string, unknown> = { type: 'integer' };
    for (let i = 0; i < 100; i++) schema = { type: 'array', items: schema };
    expect(() => validateResponseFormat({ type: 'json_schema', schema })).toThrow(/nests deeper than 64/);
  });
});

/** Draws tokens uniformly among the allowed ones until the end token; returns the text. */
async function walk(format: ResponseFormat, seed: number): Promise<string> {
  const compiled = await guided.compile(format);
  const source = compiled!.maskSource();
  let state = seed;
  const next = (): number => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 4294967296);
  const tokens = tokenizerJson.model as { vocab: Record<string, number> };
  const text: string[] = [];
  const byId = Object.entries(tokens.vocab).sort((a, b) => a[1] - b[1]).map(([t]) => t);
  const generated: number[] = [];
  try {
    for (let step = 0; step < 400; step++) {
      const mask = await source.nextMask(generated);
      const allowed: number[] = [];
      for (let id = 0; id < VOCAB; id++) if ((mask[id >>> 5] >>> (id & 31)) & 1) allowed.push(id);
      const id = allowed[Math.floor(next() * allowed.length)];
      if (id === 0) break;
      generated.push(id);
      text.push(byId[id]);
    }
  } finally {
    source.dispose();
    compiled!.dispose();
  }
  // Byte-level tokens: map the GPT-2 byte alphabet back to bytes.
  const bytes: number[] = [];
  const alphabet = byteAlphabet();
  for (const ch of text.join('')) bytes.push(alphabet.get(ch) as number);
  // Fatal: ill-formed UTF-8 throws rather than becoming U+FFFD.
  return new TextDecoder('utf-8', { fatal: true }).decode(Uint8Array.from(bytes));
}

function byteAlphabet(): Map<string, number> {
  const printable = [...Array(256).keys()].filter((b) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255));
  const map = new Map<string, number>();
  let extra = 0;
  for (let b = 0; b < 256; b++) map.set(String.fromCodePoint(printable.includes(b) ? b : 256 + extra++), b);
  return map;
}

describe('grammars for scribe-7m\'s tokenizer', () => {
  it('json_schema: random walks end in valid JSON', async () => {
    const schema = { type: 'object', properties: { id: { type: 'string', format: 'uuid' }, n: { type: 'integer', minimum: -5, maximum: 5 }, c: { enum: ['a', 'b'] } }, required: ['id', 'n', 'c'] };
    const ajv = new Ajv2020();
    addFormats(ajv);
    for (let seed = 1; seed <= 5; seed++) expect(ajv.validate(schema, JSON.parse(await walk({ type: 'json_schema', schema }, seed)))).toBe(true);
  });

  it('strings are well-formed UTF-8 within their length bounds (byte-level tokens cannot split or forge a character)', async () => {
    // Uniform draws among the allowed tokens pick single bytes often: before the UTF-8 masks, xgrammar
    // let them write C0 9B, E0 85 9F or F6 90 A2 9E inside strings.
    const schema = {
      type: 'object',
      properties: { a: { type: 'string', maxLength: 6 }, b: { type: 'string', minLength: 2, maxLength: 4 }, c: { type: 'string', minLength: 3, maxLength: 10 } },
      required: ['a', 'b', 'c'],
    };
    const ajv = new Ajv2020();
    let nonAscii = 0;
    for (let seed = 1; seed <= 40; seed++) {
      const text = await walk({ type: 'json_schema', schema }, seed);
      expect(ajv.validate(schema, JSON.parse(text))).toBe(true);
      if (/[^\x00-\x7f]/.test(text)) nonAscii++;
    }
    expect(nonAscii).toBeGreaterThan(10); // the draws do write multi-byte characters
  });

  it('integer ranges, calendar dates and times: every walk validates (xgrammar gave 127 for maximum 120, Feb 31, second 60)', async () => {
    const schema = {
      type: 'object',
      properties: {
        n: { type: 'integer', minimum: 0, maximum: 120 },
        m: { type: 'integer', exclusiveMinimum: -41, maximum: 37 },
        d: { type: 'string', format: 'date' },
        t: { type: 'string', format: 'time' },
        w: { type: 'string', format: 'date-time' },
      },
      required: ['n', 'm', 'd', 't', 'w'],
    };
    const ajv = new Ajv2020();
    addFormats(ajv);
    const failures: string[] = [];
    for (let seed = 1; seed <= 60; seed++) {
      const text = await walk({ type: 'json_schema', schema }, seed);
      if (!ajv.validate(schema, JSON.parse(text))) failures.push(text);
    }
    expect(failures).toEqual([]);
  });

  it('integerRangeRule writes exactly the integers of its range', () => {
    // The alternatives read as a regular expression, checked on every integer around each range.
    const asRegex = (ebnf: string) => new RegExp(`^(?:${ebnf.replace(/"([^"]*)"/g, '$1').replace(/ \| /g, '|').replace(/ /g, '')})$`);
    const wrong: string[] = [];
    for (const [lo, hi] of [[0, 120], [1900, 2100], [-40, -1], [-9, 9], [0, 0], [-1, 0], [7, 7], [10, 99], [123, 4567], [-1000, -999], [-3000, 2999]]) {
      const regex = asRegex(integerRangeRule(lo, hi));
      for (let value = lo - 200; value <= hi + 200; value++) if (regex.test(String(value)) !== (value >= lo && value <= hi)) wrong.push(`${lo}..${hi}: ${value}`);
      for (const text of ['-0', '00', '01', '-01']) if (regex.test(text)) wrong.push(`${lo}..${hi}: ${text}`);
    }
    expect(wrong).toEqual([]);
  });

  it('bounded strings hold no control character', async () => {
    const schema = { type: 'array', items: { type: 'string', minLength: 1, maxLength: 3 }, minItems: 4, maxItems: 4 };
    for (let seed = 1; seed <= 10; seed++) {
      for (const item of JSON.parse(await walk({ type: 'json_schema', schema }, seed)) as string[]) expect(item).not.toMatch(/[\x00-\x1f]/);
    }
  });

  it('regex and grammar', async () => {
    expect(await walk({ type: 'regex', pattern: '(yes|no)-[0-9]{3}' }, 3)).toMatch(/^(yes|no)-[0-9]{3}$/);
    expect(await walk({ type: 'grammar', grammar: 'root ::= "[" [a-c]{2} "]"' }, 4)).toMatch(/^\[[a-c]{2}\]$/);
  });

  it('a grammar xgrammar cannot parse is a ResponseFormatError with its reason', async () => {
    const error = await guided.compile({ type: 'grammar', grammar: 'root ::= ( "a"' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ResponseFormatError);
    expect((error as ResponseFormatError).path).toBe('responseFormat.grammar');
    expect((error as Error).message).toMatch(/EBNF parser error/);
  });
});
