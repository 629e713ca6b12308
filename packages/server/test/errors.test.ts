// Bad input gets a 4xx in the protocol's error shape and the server keeps serving; the API key guards
// every route but health; /metrics speaks Prometheus; shutdown drains.
import { LLM } from '@kiln/runtime';
import { KilnServer } from '@kiln/server';
import { buildTestEngines, metric, readSse, type TestEngines } from './helpers';

const PROMPT = 'And the LORD said unto Moses,';
const BODY_LIMIT = 64 * 1024;

describe('bad input, API key, metrics, shutdown', () => {
  let engines: TestEngines;
  let server: KilnServer;
  let url: string;

  beforeAll(async () => {
    engines = await buildTestEngines();
    server = await KilnServer.create({ llm: await LLM.load(engines.engineDir), ownsLlm: true, modelName: 'scribe-7m', logger: false, bodyLimit: BODY_LIMIT });
    url = await server.listen({ port: 0 });
  });
  afterAll(async () => {
    await server?.close({ graceMs: 1000 });
    await engines?.cleanup();
  });

  const post = (path: string, body: unknown, headers: Record<string, string> = {}, base = url) =>
    fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });

  async function expectOpenAIError(response: Response, status: number, param?: string | null): Promise<{ message: string; type: string; param: string | null; code: string | null }> {
    expect(response.status).toBe(status);
    const body = await response.json();
    expect(Object.keys(body)).toEqual(['error']);
    expect(Object.keys(body.error).sort()).toEqual(['code', 'message', 'param', 'type']);
    expect(typeof body.error.message).toBe('string');
    if (param !== undefined) expect(body.error.param).toBe(param);
    return body.error;
  }

  const completion = { model: 'scribe-7m', prompt: PROMPT, max_tokens: 4, temperature: 0 };
  const chat = { model: 'scribe-7m', messages: [{ role: 'user', content: PROMPT }], max_tokens: 4 };

  test('malformed JSON, a body over the limit, a wrong content type', async () => {
    const malformed = await expectOpenAIError(await post('/v1/completions', '{"model": "scribe-7m", "prompt": '), 400);
    expect(malformed.code).toBe('invalid_json');
    const big = await expectOpenAIError(await post('/v1/completions', { ...completion, prompt: 'x'.repeat(BODY_LIMIT) }), 413);
    expect(big.code).toBe('request_too_large');
    const text = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hello' });
    await expectOpenAIError(text, 400);  // read as a string, which the body schema rejects
  });

  test('unknown model and unknown route', async () => {
    const unknown = await expectOpenAIError(await post('/v1/completions', { ...completion, model: 'gpt-5' }), 404, 'model');
    expect(unknown.code).toBe('model_not_found');
    await expectOpenAIError(await post('/v1/chat/completions', { ...chat, model: 'gpt-5' }), 404, 'model');
    await expectOpenAIError(await fetch(`${url}/v1/nothing`), 404);
  });

  test('max_tokens <= 0 or past the engine, prompts longer than the engine allows, tokens outside the vocabulary', async () => {
    for (const maxTokens of [0, -3]) await expectOpenAIError(await post('/v1/completions', { ...completion, max_tokens: maxTokens }), 400, 'max_tokens');
    const past = await expectOpenAIError(await post('/v1/completions', { ...completion, max_tokens: 100_000 }), 400, 'max_tokens');
    expect(past.code).toBe('context_length_exceeded');
    const maxSeqLen = server.llm.engine.maxSeqLen;
    const longIds = await expectOpenAIError(await post('/v1/completions', { ...completion, prompt: new Array(maxSeqLen).fill(5) }), 400, 'prompt');
    expect(longIds.code).toBe('context_length_exceeded');
    await expectOpenAIError(await post('/v1/completions', { ...completion, prompt: 'the LORD '.repeat(maxSeqLen) }), 400, 'prompt');
    await expectOpenAIError(await post('/v1/chat/completions', { ...chat, messages: [{ role: 'user', content: 'x' }], max_tokens: 0 }), 400, 'max_tokens');
    await expectOpenAIError(await post('/v1/completions', { ...completion, prompt: [1, 2, 999_999] }), 400, 'prompt');
    await expectOpenAIError(await post('/v1/completions', { ...completion, prompt: [] }), 400, 'prompt');
    await expectOpenAIError(await post('/v1/completions', { ...completion, prompt: '' }), 400, 'prompt');
  });

  test('wrong types in every field are 400s naming the field', async () => {
    const completionFields: Record<string, unknown> = {
      model: 5, prompt: { text: PROMPT }, max_tokens: '4', n: '3', temperature: '0', top_p: 'x', stop: 5, seed: '1',
      presence_penalty: '0', frequency_penalty: true, logit_bias: [1], logprobs: '2', stream: 'yes', stream_options: 1,
      echo: 'no', user: 1, top_k: 1.5, min_p: '0', repetition_penalty: '1', beam_width: '1', ignore_eos: 1,
      min_tokens: '1', bad_words: 'x', stop_token_ids: ['a'], length_penalty: 'long',
    };
    for (const [field, value] of Object.entries(completionFields)) {
      const error = await expectOpenAIError(await post('/v1/completions', { ...completion, [field]: value }), 400);
      expect([field, error.message]).toEqual([field, expect.stringContaining(field)]);
    }
    const chatFields: Record<string, unknown> = {
      messages: 'hi', max_completion_tokens: '1', logprobs: 'true', top_logprobs: '1', max_tokens: 2.5, temperature: [0], n: 0,
    };
    for (const [field, value] of Object.entries(chatFields)) {
      const error = await expectOpenAIError(await post('/v1/chat/completions', { ...chat, [field]: value }), 400);
      expect([field, error.message]).toEqual([field, expect.stringContaining(field)]);
    }
    for (const messages of [[], [{ role: 5, content: 'x' }], [{ role: 'user', content: 5 }], [{ content: 'x' }], [{ role: 'wizard', content: 'x' }]]) {
      await expectOpenAIError(await post('/v1/chat/completions', { ...chat, messages }), 400);
    }
  });

  test('chat on a model without a chat template: a clear 400', async () => {
    const error = await expectOpenAIError(await post('/v1/chat/completions', chat), 400, 'messages');
    expect(error.code).toBe('chat_template_missing');
    expect(error.message).toMatch(/chat template/);
  });

  test('after all that the server still serves', async () => {
    const response = await post('/v1/completions', completion);
    expect(response.status).toBe(200);
    expect((await response.json()).choices[0].text.length).toBeGreaterThan(0);
    expect((await fetch(`${url}/health`)).status).toBe(200);
  });

  test('/metrics: requests by route and status, executor gauges, TTFT/TPOT histograms, token counters', async () => {
    await post('/v1/completions', { ...completion, max_tokens: 8 });
    const response = await fetch(`${url}/metrics`);
    expect(response.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await response.text();
    expect(metric(text, 'kiln_http_requests_total', '{route="/v1/completions",status="200"}')).toBeGreaterThanOrEqual(2);
    expect(metric(text, 'kiln_http_requests_total', '{route="/v1/completions",status="400"}')).toBeGreaterThan(10);
    expect(metric(text, 'kiln_queue_length')).toBe(0);
    expect(metric(text, 'kiln_running_requests')).toBe(0);
    expect(metric(text, 'kiln_kv_blocks_used')).toBe(0);
    expect(metric(text, 'kiln_kv_blocks_free')).toBe(metric(text, 'kiln_kv_blocks_total'));
    expect(metric(text, 'kiln_time_to_first_token_seconds_count')).toBeGreaterThanOrEqual(2);
    expect(metric(text, 'kiln_time_per_output_token_seconds_count')).toBeGreaterThanOrEqual(2);
    expect(metric(text, 'kiln_generation_tokens_total')).toBeGreaterThanOrEqual(12);
    expect(metric(text, 'process_resident_memory_bytes')).toBeGreaterThan(0);
  });

  test('--api-key: 401 without or with a wrong key, and nothing runs; health stays open', async () => {
    const llm = await LLM.load(engines.engineDir);
    const guarded = await KilnServer.create({ llm, ownsLlm: true, modelName: 'scribe-7m', logger: false, apiKey: 'sesame' });
    const base = await guarded.listen({ port: 0 });
    try {
      const iterations = llm.engine.executor.stats().iterations;
      for (const headers of [{}, { authorization: 'Bearer wrong' }, { authorization: 'sesame' }, { authorization: 'Bearer sesam' }]) {
        const error = await expectOpenAIError(await post('/v1/completions', completion, headers, base), 401);
        expect(error.type).toBe('authentication_error');
        expect((await post('/v2/models/scribe-7m/generate', { text_input: PROMPT, max_tokens: 2 }, headers, base)).status).toBe(401);
        expect((await fetch(`${base}/v1/models`, { headers })).status).toBe(401);
        expect((await fetch(`${base}/metrics`, { headers })).status).toBe(401);
      }
      expect(llm.engine.executor.stats().iterations).toBe(iterations);
      for (const route of ['/health', '/v2/health/live', '/v2/health/ready']) expect((await fetch(`${base}${route}`)).status).toBe(200);
      const ok = await post('/v1/completions', completion, { authorization: 'Bearer sesame' }, base);
      expect(ok.status).toBe(200);
      expect(llm.engine.executor.stats().iterations).toBeGreaterThan(iterations);
    } finally {
      await guarded.close({ graceMs: 1000 });
    }
  });

  test('beyond --max-concurrency: 429, and the server keeps serving', async () => {
    const own = await KilnServer.create({ llm: await LLM.load(engines.engineDir), ownsLlm: true, modelName: 'scribe-7m', logger: false, maxConcurrentRequests: 1 });
    const base = await own.listen({ port: 0 });
    try {
      const first = await post('/v1/completions', { ...completion, max_tokens: 300, ignore_eos: true, stream: true }, {}, base);
      const reading = first.text();
      const error = await expectOpenAIError(await post('/v1/completions', completion, {}, base), 429);
      expect(error.code).toBe('too_many_requests');
      expect(await reading).toMatch(/data: \[DONE\]/);
      expect((await post('/v1/completions', completion, {}, base)).status).toBe(200);
    } finally {
      await own.close({ graceMs: 1000 });
    }
  });

  test('graceful shutdown: the request in flight finishes, new ones are refused', async () => {
    const own = await KilnServer.create({ llm: await LLM.load(engines.engineDir), ownsLlm: true, modelName: 'scribe-7m', logger: false });
    const base = await own.listen({ port: 0 });
    const response = await post('/v1/completions', { ...completion, max_tokens: 200, ignore_eos: true, stream: true, stream_options: { include_usage: true } }, {}, base);
    expect(response.status).toBe(200);
    let closing: Promise<void> | undefined;
    let refused: number | string | undefined;
    let completionTokens = 0;
    let done = false;
    await readSse(response, (data) => {
      if (data === '[DONE]') done = true;
      else {
        const chunk = JSON.parse(data);
        if (chunk.usage) completionTokens = chunk.usage.completion_tokens;
      }
      closing ??= own.close({ graceMs: 10_000 });
    });
    await post('/v1/completions', completion, {}, base).then(
      (r) => (refused = r.status),
      (e: Error) => (refused = e.message),
    );
    await closing;
    expect(done).toBe(true);
    expect(completionTokens).toBe(200);
    expect(refused).not.toBe(200);
  });
});
