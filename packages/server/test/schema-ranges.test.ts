// Property test: every value a request schema accepts either runs or is refused with a 4xx, never a 500
// (issue 16, finding 4: temperature 1e308, top_p 1e-320, repetition_penalty 1e-300, logit_bias 1e308 and
// Triton's presence_penalty 1e308 passed the schema and then failed as server errors). For every numeric
// field of every body schema, values are drawn from the field's own range (its bounds, values next to
// them, float32's limits, subnormals, huge integers, and seeded log-uniform samples) and sent over HTTP;
// nothing may answer 5xx, no stream may end in an error event, and nothing may be logged at error level.
import { Writable } from 'node:stream';
import { LLM } from '@kiln/runtime';
import { KilnServer } from '@kiln/server';
import { chatCompletionsBody, completionsBody, tritonGenerateBody } from '../src/schemas';
import { buildTestEngines, sseData, type TestEngines } from './helpers';

type Schema = { type?: string | string[]; minimum?: number; maximum?: number; exclusiveMinimum?: number; items?: Schema; additionalProperties?: Schema };

/** A small seeded generator (mulberry32), so that a failure can be replayed. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SPECIAL = [
  0, 1, -1, 0.5, 2, -2, 5e-324, 1e-320, 1e-300, 1e-45, 1e-40, 1e-38, 1e-7, 0.999999, 1.000001, 3.4e38, 3.4028234663852886e38,
  3.5e38, 1e38, 1e300, 1e308, -1e308, -3.4e38, 2 ** 31, 2 ** 32, Number.MAX_SAFE_INTEGER, 2 ** 53 + 2, 2 ** 63, 2 ** 64, 1e21,
];

/** Values the schema of one numeric field accepts. */
function acceptedValues(schema: Schema, rng: () => number): number[] {
  const types = Array.isArray(schema.type) ? schema.type : [schema.type];
  const integer = types.includes('integer') && !types.includes('number');
  const lo = schema.minimum ?? schema.exclusiveMinimum ?? -Number.MAX_VALUE;
  const hi = schema.maximum ?? Number.MAX_VALUE;
  const values = [...SPECIAL, lo, hi, lo + 1, hi - 1, lo + Number.EPSILON, hi * (1 - Number.EPSILON)];
  for (let i = 0; i < 12; i++) {
    // Log-uniform over the magnitudes in range, either sign.
    const magnitude = 10 ** (-320 + rng() * 628);
    values.push(rng() < 0.5 ? magnitude : -magnitude, lo + (Math.min(hi, lo + 1000) - lo) * rng());
  }
  const accepted = values
    .map((v) => (integer ? Math.round(v) : v))
    .filter((v) => Number.isFinite(v) && v <= hi && (schema.minimum === undefined || v >= schema.minimum))
    .filter((v) => schema.exclusiveMinimum === undefined || v > schema.exclusiveMinimum)
    .filter((v) => !integer || Number.isInteger(v));
  return [...new Set(accepted)];
}

function numericFields(schema: { properties: Record<string, Schema> }): [string, Schema][] {
  return Object.entries(schema.properties).filter(([, field]) => {
    const types = Array.isArray(field.type) ? field.type : [field.type];
    return types.includes('number') || types.includes('integer');
  });
}

describe('no value a request schema accepts gives a 500', () => {
  let engines: TestEngines;
  let server: KilnServer;
  let url: string;
  const errorLogs: string[] = [];

  beforeAll(async () => {
    engines = await buildTestEngines({ maxBatchSize: 64 });
    const stream = new Writable({
      write(chunk: Buffer, _encoding, done) {
        const line = chunk.toString();
        if (/"level":(50|60)/.test(line)) errorLogs.push(line);
        done();
      },
    });
    server = await KilnServer.create({
      llm: await LLM.load(engines.chatEngineDir),
      ownsLlm: true,
      modelName: 'scribe-7m',
      logger: { level: 'error', stream },
    });
    url = await server.listen({ port: 0 });
  });
  afterAll(async () => {
    await server?.close({ graceMs: 1000 });
    await engines?.cleanup();
  });

  async function send(route: string, body: object): Promise<{ status: number; text: string }> {
    const response = await fetch(`${url}${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { status: response.status, text: await response.text() };
  }

  const cases: [string, string, { properties: Record<string, Schema> }, object][] = [
    ['completions', '/v1/completions', completionsBody as never, { model: 'scribe-7m', prompt: 'In the beginning', max_tokens: 2 }],
    ['completions (stream)', '/v1/completions', completionsBody as never, { model: 'scribe-7m', prompt: 'In the beginning', max_tokens: 2, stream: true }],
    ['chat', '/v1/chat/completions', chatCompletionsBody as never, { model: 'scribe-7m', messages: [{ role: 'user', content: 'Hello' }], max_tokens: 2 }],
    ['triton generate', '/v2/models/scribe-7m/generate', tritonGenerateBody as never, { text_input: 'In the beginning', max_tokens: 2 }],
    ['triton generate_stream', '/v2/models/scribe-7m/generate_stream', tritonGenerateBody as never, { text_input: 'In the beginning', max_tokens: 2 }],
  ];

  test.each(cases)('%s: every numeric field over its range', async (_name, route, schema, base) => {
    const rng = random(16);
    const failures: string[] = [];
    let sent = 0;
    let ok = 0;
    for (const [field, fieldSchema] of numericFields(schema)) {
      for (const value of acceptedValues(fieldSchema, rng)) {
        const body = { ...base, [field]: value };
        const { status, text } = await send(route, body);
        sent++;
        if (status === 200) ok++;
        const streamed = route.endsWith('/generate_stream') || (body as { stream?: unknown }).stream === true;
        const streamError = status === 200 && streamed && sseData(text).some((data) => data !== '[DONE]' && 'error' in JSON.parse(data));
        if (status >= 500 || streamError) failures.push(`${field}: ${value} -> ${status} ${text.slice(0, 200)}`);
        else expect([200, 400, 404]).toContain(status);
      }
    }
    expect(failures).toEqual([]);
    expect(sent).toBeGreaterThan(100);
    expect(ok).toBeGreaterThan(10);  // the ranges are not all refused
  });

  test('list items and map values over their ranges: stop_token_ids, logit_bias', async () => {
    const rng = random(17);
    const failures: string[] = [];
    const base = { model: 'scribe-7m', prompt: 'In the beginning', max_tokens: 2 };
    const items = completionsBody.properties.stop_token_ids.items as Schema;
    for (const value of acceptedValues(items, rng)) {
      const { status, text } = await send('/v1/completions', { ...base, stop_token_ids: [value] });
      if (status >= 500) failures.push(`stop_token_ids [${value}] -> ${status} ${text.slice(0, 200)}`);
    }
    const bias = completionsBody.properties.logit_bias.additionalProperties as Schema;
    for (const token of ['0', '5', '4095', '4096', '9999999999']) {
      for (const value of acceptedValues(bias, rng)) {
        const { status, text } = await send('/v1/completions', { ...base, logit_bias: { [token]: value } });
        if (status >= 500) failures.push(`logit_bias {${token}: ${value}} -> ${status} ${text.slice(0, 200)}`);
      }
    }
    expect(failures).toEqual([]);
  });

  test('the values of the report are 400s naming the field', async () => {
    const base = { model: 'scribe-7m', prompt: 'In the beginning', max_tokens: 2 };
    for (const [field, value] of [['temperature', 1e308], ['top_p', 1e-320], ['repetition_penalty', 1e-300]] as const) {
      const { status, text } = await send('/v1/completions', { ...base, [field]: value });
      expect({ field, status }).toEqual({ field, status: 400 });
      expect(JSON.parse(text).error.param).toBe(field);
    }
    const bias = await send('/v1/completions', { ...base, logit_bias: { 5: 1e308 } });
    expect(bias.status).toBe(400);
    const triton = await send('/v2/models/scribe-7m/generate', { text_input: 'In the beginning', max_tokens: 2, presence_penalty: 1e308 });
    expect(triton.status).toBe(400);
    expect(JSON.parse(triton.text).error).toMatch(/presence_penalty/);
  });

  afterAll(() => {
    expect(errorLogs).toEqual([]);
  });
});
