// Triton's KServe v2 health and metadata routes and its generate extension (TensorRT-LLM ensemble field
// names), spoken as plain JSON over fetch.
import { LLM } from '@kiln/runtime';
import { KilnServer } from '@kiln/server';
import { buildTestEngines, readSse, type TestEngines } from './helpers';

const PROMPT = 'And the LORD said unto Moses,';

describe('Triton generate protocol', () => {
  let engines: TestEngines;
  let server: KilnServer;
  let url: string;

  beforeAll(async () => {
    engines = await buildTestEngines();
    server = await KilnServer.create({ llm: await LLM.load(engines.engineDir), ownsLlm: true, modelName: 'ensemble', logger: false });
    url = await server.listen({ port: 0 });
  });
  afterAll(async () => {
    await server?.close({ graceMs: 1000 });
    await engines?.cleanup();
  });

  const post = (path: string, body: unknown) =>
    fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

  test('health, server and model metadata, readiness', async () => {
    expect((await fetch(`${url}/v2/health/live`)).status).toBe(200);
    expect((await fetch(`${url}/v2/health/ready`)).status).toBe(200);
    expect((await fetch(`${url}/v2/models/ensemble/ready`)).status).toBe(200);
    const metadata = await (await fetch(`${url}/v2/models/ensemble`)).json();
    expect(metadata).toMatchObject({ name: 'ensemble', versions: ['1'], platform: 'kiln' });
    expect(metadata.inputs.map((t: { name: string }) => t.name)).toContain('text_input');
    expect(metadata.outputs.map((t: { name: string }) => t.name)).toContain('text_output');
    expect((await (await fetch(`${url}/v2`)).json()).extensions).toContain('generate');
    const unknown = await fetch(`${url}/v2/models/nope`);
    expect(unknown.status).toBe(404);
    expect(typeof (await unknown.json()).error).toBe('string');
  });

  test('generate: text_output is LLM.generate\'s text; logprobs on request', async () => {
    const reference = await server.llm.generate(PROMPT, { maxTokens: 20 });
    const response = await post('/v2/models/ensemble/generate', { text_input: PROMPT, max_tokens: 20, bad_words: '', stop_words: '', temperature: 0, return_log_probs: true });
    expect(response.status).toBe(200);
    const body = await response.json();
    expect(body).toMatchObject({ model_name: 'ensemble', model_version: '1', text_output: reference.text, batch_index: 0, sequence_index: 0 });
    expect(body.output_log_probs).toHaveLength(reference.outputIds.length);
    expect(body.cum_log_probs).toBeCloseTo(body.output_log_probs.reduce((a: number, b: number) => a + b, 0), 4);
    // exclude_input_in_output: false gives the prompt back in front.
    const withInput = await (await post('/v2/models/ensemble/generate', { text_input: PROMPT, max_tokens: 20, exclude_input_in_output: false })).json();
    expect(withInput.text_output).toBe(PROMPT + reference.text);
    // The versioned path answers too.
    expect((await post('/v2/models/ensemble/versions/1/generate', { text_input: PROMPT, max_tokens: 2 })).status).toBe(200);
  });

  test('generate: stop_words end the text before the stop string', async () => {
    const reference = await server.llm.generate(PROMPT, { maxTokens: 20 });
    const stop = reference.text.slice(5, 8);
    const body = await (await post('/v2/models/ensemble/generate', { text_input: PROMPT, max_tokens: 20, stop_words: [stop] })).json();
    expect(body.text_output).toBe(reference.text.slice(0, reference.text.indexOf(stop)));
    expect(body.finish_reason).toBe('stop_words');
  });

  test('finish_reason in TensorRT-LLM\'s names: end_id, stop_words, length', async () => {
    const reference = await server.llm.generate(PROMPT, { maxTokens: 64 });
    const names = { eos: 'end_id', stop: 'stop_words', length: 'length', cancelled: 'cancelled' };
    const body = await (await post('/v2/models/ensemble/generate', { text_input: PROMPT, max_tokens: 64 })).json();
    expect(body.finish_reason).toBe(names[reference.finishReason]);
    const short = await (await post('/v2/models/ensemble/generate', { text_input: PROMPT, max_tokens: 2 })).json();
    expect(short.finish_reason).toBe('length');
    const events: Record<string, unknown>[] = [];
    await readSse(await post('/v2/models/ensemble/generate_stream', { text_input: PROMPT, max_tokens: 2 }), (data) => void events.push(JSON.parse(data)));
    expect(events.map((e) => e.finish_reason)).toEqual([...Array(events.length - 1).fill(undefined), 'length']);
  });

  test('generate_stream: SSE events whose text_output deltas concatenate to the text', async () => {
    const reference = await server.llm.generate(PROMPT, { maxTokens: 20 });
    const response = await post('/v2/models/ensemble/generate_stream', { text_input: PROMPT, max_tokens: 20, stream: true, temperature: 0 });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const events: Record<string, unknown>[] = [];
    await readSse(response, (data) => void events.push(JSON.parse(data)));
    expect(events.length).toBeGreaterThan(2);
    for (const event of events) expect(event).toMatchObject({ model_name: 'ensemble', model_version: '1' });
    expect(events.map((e) => e.text_output).join('')).toBe(reference.text);
  });

  test('errors are {"error": message} with a 4xx', async () => {
    for (const [body, status] of [
      [{ max_tokens: 4 }, 400],
      [{ text_input: PROMPT, max_tokens: 0 }, 400],
      [{ text_input: PROMPT, max_tokens: '4' }, 400],
      [{ text_input: PROMPT, max_tokens: 4, temperature: 'hot' }, 400],
      [{ text_input: PROMPT, max_tokens: 4, stop_words: [1] }, 400],
      [{ text_input: PROMPT, max_tokens: 100000 }, 400],
      [{ text_input: PROMPT, max_tokens: 4, stream: true }, 400],
    ] as const) {
      const response = await post('/v2/models/ensemble/generate', body);
      expect(response.status).toBe(status);
      const error = await response.json();
      expect(Object.keys(error)).toEqual(['error']);
      expect(typeof error.error).toBe('string');
    }
    const unknown = await post('/v2/models/other/generate', { text_input: PROMPT, max_tokens: 4 });
    expect(unknown.status).toBe(404);
    expect((await unknown.json()).error).toMatch(/unknown model/);
    const malformed = await fetch(`${url}/v2/models/ensemble/generate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"text_input": ' });
    expect(malformed.status).toBe(400);
    expect(typeof (await malformed.json()).error).toBe('string');
  });
});
