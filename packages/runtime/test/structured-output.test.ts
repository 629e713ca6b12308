// Structured output end to end (issue 14): 50 JSON schemas, each sampled at temperature 1 with its own
// seed, on the built-in scribe-7m and on the random-weight llama fixture (byte-level tokens: it writes
// multi-byte characters inside strings, byte by byte), through LLM.generate's responseFormat. Every
// output must parse and validate with ajv (formats included). Beam search and greedy too, and the
// errors that name the field at fault.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import Ajv2020 from 'ajv/dist/2020';
import addFormats from 'ajv-formats';
import { buildEngine } from '@kiln/builder';
import { ResponseFormatError } from '@kiln/chat';
import { convertCheckpoint } from '@kiln/convert';
import { LLM } from '@kiln/runtime';
import { scribe7mPath } from '@kiln/scribe-7m';
import { SCHEMAS } from './structured-schemas';

const FIXTURES = path.join(__dirname, '../../../fixtures/hf-tiny');
// The llama fixture's config.json says eos_token_id 2 (transformers' default), which is '"' in its
// byte-level vocabulary: its tokenizer's end token is <|endoftext|>, id 0.
const END_IDS: Record<string, { endId?: number }> = { scribe: {}, llama: { endId: 0 } };

let tmpDir: string;
const models: Record<string, LLM> = {};

async function build(modelDir: string, name: string, maxSeqLen: number): Promise<LLM> {
  const checkpointDir = path.join(tmpDir, `${name}-checkpoint`);
  await convertCheckpoint({ modelDir, outputDir: checkpointDir });
  await buildEngine({ checkpointDir, outputDir: path.join(tmpDir, name), config: { maxBatchSize: 16, maxSeqLen, maxBeamWidth: 4 } });
  return LLM.load(path.join(tmpDir, name), { numThreads: 2 });
}

beforeAll(async () => {
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-structured-'));
  models.scribe = await build(scribe7mPath, 'scribe', 512);
  models.llama = await build(path.join(FIXTURES, 'llama'), 'llama', 256);
}, 300000);

afterAll(async () => {
  for (const llm of Object.values(models)) await llm.dispose();
  fs.rmSync(tmpDir, { recursive: true, force: true });
});

function validator(schema: object) {
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats(ajv);
  return ajv.compile(schema);
}

describe.each(['scribe', 'llama'])('50 JSON schemas on %s at temperature 1', (model) => {
  it('every output parses and validates', async () => {
    const llm = models[model];
    const results = await Promise.all(
      SCHEMAS.map(([, schema], index) =>
        llm.generate('The record, as JSON:', { maxTokens: 200, temperature: 1, seed: 1000 + index, responseFormat: { type: 'json_schema', schema }, ...END_IDS[model] }),
      ),
    );
    const failures: string[] = [];
    results.forEach((result, index) => {
      const [title, schema] = SCHEMAS[index];
      let value: unknown;
      try {
        value = JSON.parse(result.text);
      } catch (error) {
        failures.push(`${title}: not JSON (${result.finishReason}, ${result.outputIds.length} tokens): ${result.text.slice(0, 200)}`);
        return;
      }
      const validate = validator(schema);
      if (!validate(value)) failures.push(`${title}: ${JSON.stringify(validate.errors)} for ${result.text}`);
      if (result.finishReason !== 'eos') failures.push(`${title}: finished with ${result.finishReason}`);
    });
    expect(failures).toEqual([]);
  });
});

describe('responseFormat', () => {
  it('json_object gives a JSON object; beam search and greedy are constrained too', async () => {
    const llm = models.scribe;
    const object = await llm.generate('And the LORD said', { maxTokens: 200, temperature: 0.8, seed: 5, responseFormat: { type: 'json_object' } });
    expect(typeof JSON.parse(object.text)).toBe('object');
    expect(Array.isArray(JSON.parse(object.text))).toBe(false);
    const schema = { type: 'object', properties: { tribe: { enum: ['Judah', 'Levi', 'Dan'] }, count: { type: 'integer', minimum: 1, maximum: 12 } }, required: ['tribe', 'count'] };
    const validate = validator(schema);
    const greedy = await llm.generate('And the LORD said', { maxTokens: 100, responseFormat: { type: 'json_schema', schema } });
    expect(validate(JSON.parse(greedy.text))).toBe(true);
    const beams = await llm.generate('And the LORD said', { maxTokens: 100, beamWidth: 3, numReturnSequences: 3, responseFormat: { type: 'json_schema', schema } });
    expect(beams.sequences).toHaveLength(3);
    for (const sequence of beams.sequences ?? []) expect(validate(JSON.parse(sequence.text))).toBe(true);
  });

  it('regex and EBNF grammars', async () => {
    const llm = models.scribe;
    const regex = await llm.generate('The date:', { maxTokens: 40, temperature: 1, seed: 3, responseFormat: { type: 'regex', pattern: '[0-9]{4}-[0-9]{2}-[0-9]{2}' } });
    expect(regex.text).toMatch(/^[0-9]{4}-[0-9]{2}-[0-9]{2}$/);
    const grammar = await llm.generate('Answer:', {
      maxTokens: 40,
      temperature: 1,
      seed: 4,
      responseFormat: { type: 'grammar', grammar: 'root ::= ("yes" | "no") ", " [a-z]{1,8} "."' },
    });
    expect(grammar.text).toMatch(/^(yes|no), [a-z]{1,8}\.$/);
  });

  it.each<[unknown, string]>([
    [{ type: 'json_schema', schema: { type: 'object', properties: { n: { type: 'integer', multipleOf: 3 } } } }, 'responseFormat.schema.properties.n.multipleOf'],
    [{ type: 'json_schema', schema: { type: 'array', uniqueItems: true } }, 'responseFormat.schema.uniqueItems'],
    [{ type: 'json_schema', schema: { type: 'string', format: 'credit-card' } }, 'responseFormat.schema.format'],
    [{ type: 'json_schema', schema: { type: 'string', format: 'ipv4' } }, 'responseFormat.schema.format'],
    [{ type: 'json_schema', schema: { type: 'object', properties: { a: { $ref: '#/$defs/missing' } } } }, 'responseFormat.schema.properties.a.$ref'],
    [{ type: 'json_schema', schema: { type: 'object', properties: { a: { $ref: 'https://example.com/s.json' } } } }, 'responseFormat.schema.properties.a.$ref'],
    [{ type: 'json_schema', schema: { type: 'number', maximum: 3 } }, 'responseFormat.schema.maximum'],
    [{ type: 'json_schema', schema: { type: 'strin' } }, 'responseFormat.schema.type'],
    [{ type: 'xml' }, 'responseFormat.type'],
    [{ type: 'json_object', schema: {} }, 'responseFormat.schema'],
    [{ type: 'grammar', grammar: 'root ::= "a" | ' }, 'responseFormat.grammar'],
  ])('%j is refused naming %s', async (responseFormat, field) => {
    const error = await models.scribe.generate('x', { maxTokens: 4, responseFormat: responseFormat as never }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ResponseFormatError);
    expect((error as ResponseFormatError).path).toBe(field);
  });

  it('a grammar error does not break later requests', async () => {
    await expect(models.scribe.generate('x', { maxTokens: 4, responseFormat: { type: 'grammar', grammar: 'root ::= (' } })).rejects.toThrow(/responseFormat.grammar/);
    const after = await models.scribe.generate('x', { maxTokens: 20, responseFormat: { type: 'regex', pattern: 'ok|no' } });
    expect(['ok', 'no']).toContain(after.text);
  });
});
