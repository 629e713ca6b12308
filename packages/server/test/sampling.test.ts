// Sampling fields passed through HTTP to the executor. These need the executor's sampling (temperature,
// top_k, seed, penalties, logit_bias validation in @kiln/runtime's Executor): until it lands, the
// executor decodes greedily whatever the request says, and these tests fail.
import OpenAI from 'openai';
import { LLM } from '@kiln/runtime';
import { KilnServer } from '@kiln/server';
import { buildTestEngines, type TestEngines } from './helpers';

const PROMPT = 'And the LORD said unto Moses,';

describe('sampling over HTTP (needs the executor\'s sampling)', () => {
  let engines: TestEngines;
  let server: KilnServer;
  let client: OpenAI;
  let url: string;
  const model = 'scribe-7m';

  beforeAll(async () => {
    engines = await buildTestEngines();
    server = await KilnServer.create({ llm: await LLM.load(engines.engineDir), ownsLlm: true, modelName: model, logger: false });
    url = await server.listen({ port: 0 });
    client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0 });
  });
  afterAll(async () => {
    await server?.close({ graceMs: 1000 });
    await engines?.cleanup();
  });

  const text = async (body: Partial<OpenAI.CompletionCreateParamsNonStreaming> & Record<string, unknown>): Promise<string[]> =>
    (await client.completions.create({ model, prompt: PROMPT, max_tokens: 24, ...body } as OpenAI.CompletionCreateParamsNonStreaming)).choices.map((c) => c.text);

  test('seed: the same seed gives the same text, other seeds other texts', async () => {
    const a = await text({ temperature: 1.2, seed: 7 });
    expect(await text({ temperature: 1.2, seed: 7 })).toEqual(a);
    const others = new Set<string>();
    for (const seed of [8, 9, 10]) others.add((await text({ temperature: 1.2, seed }))[0]);
    others.add(a[0]);
    expect(others.size).toBeGreaterThan(1);
  });

  test('n: 3 with sampling gives independent choices', async () => {
    const choices = await text({ temperature: 1.5, seed: 3, n: 3 });
    expect(choices).toHaveLength(3);
    expect(new Set(choices).size).toBeGreaterThan(1);
  });

  test('top_k: 1 samples greedily; frequency_penalty changes the greedy text', async () => {
    const greedy = await text({ temperature: 0 });
    expect(await text({ temperature: 1, top_k: 1, seed: 5 })).toEqual(greedy);
    expect(await text({ temperature: 0, frequency_penalty: 2, max_tokens: 48 })).not.toEqual(await text({ temperature: 0, max_tokens: 48 }));
  });

  test('the executor\'s validation errors are 400s naming the OpenAI field', async () => {
    const response = await fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model, prompt: PROMPT, max_tokens: 4, logit_bias: { '999999': 5 } }),
    });
    expect(response.status).toBe(400);
    expect((await response.json()).error.param).toBe('logit_bias');
  });

  test('Triton random_seed and temperature', async () => {
    const generate = async (body: object) =>
      (await (await fetch(`${url}/v2/models/${model}/generate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text_input: PROMPT, max_tokens: 24, ...body }) })).json()).text_output as string;
    const a = await generate({ temperature: 1.2, random_seed: 11 });
    expect(await generate({ temperature: 1.2, random_seed: 11 })).toBe(a);
    const all = new Set([a, ...(await Promise.all([12, 13, 14].map((seed) => generate({ temperature: 1.2, random_seed: seed }))))]);
    expect(all.size).toBeGreaterThan(1);
  });
});
