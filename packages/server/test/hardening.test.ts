// Issue 16's server findings, over real HTTP on 127.0.0.1: limits checked before tokenizing (Triton's
// string forms of stop_words and bad_words included), tokenization off the event loop giving the same
// ids, unsupported fields refused by name, `Connection: close` honoured on streams, backpressure pausing
// the request of a client that stops reading, and truncation at shutdown ending each stream with a
// finish reason and an error event in the protocol's shape.
import * as http from 'node:http';
import * as net from 'node:net';
import { LLM } from '@kiln/runtime';
import { KilnServer } from '@kiln/server';
import { TokenizePool } from '../src/tokenize-pool';
import { buildTestEngines, readSse, sseData, type TestEngines } from './helpers';

const PROMPT = 'And the LORD said unto Moses,';

describe('hardened server', () => {
  let engines: TestEngines;
  let server: KilnServer;
  let url: string;

  beforeAll(async () => {
    engines = await buildTestEngines({ maxBatchSize: 64 });
    server = await KilnServer.create({ llm: await LLM.load(engines.engineDir), ownsLlm: true, modelName: 'scribe-7m', logger: false, stalledStreamTimeoutMs: 3000 });
    url = await server.listen({ port: 0 });
  });
  afterAll(async () => {
    await server?.close({ graceMs: 1000 });
    await engines?.cleanup();
  });

  const post = (route: string, body: unknown) =>
    fetch(`${url}${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

  test('Triton stop_words and bad_words as strings get the list limits, refused before tokenizing', async () => {
    const base = { text_input: PROMPT, max_tokens: 2 };
    const stop = await post('/v2/models/scribe-7m/generate', { ...base, stop_words: Array.from({ length: 65 }, (_, i) => `w${i}`).join(',') });
    expect(stop.status).toBe(400);
    expect((await stop.json()).error).toMatch(/stop_words holds more than 64 words/);
    expect((await post('/v2/models/scribe-7m/generate', { ...base, stop_words: Array.from({ length: 64 }, (_, i) => `w${i}`).join(',') })).status).toBe(200);
    const started = Date.now();
    const bad = await post('/v2/models/scribe-7m/generate', { ...base, bad_words: Array.from({ length: 100_000 }, (_, i) => `w${i}`).join(',') });
    expect(bad.status).toBe(400);
    expect((await bad.json()).error).toMatch(/bad_words holds more than 1024 words/);
    // Was 2.7 s of tokenizing before the refusal on a quiet machine; the bound leaves room for a loaded one
    // (1.26 s measured beside a soak run), and the refusal is the error above, not the time.
    expect(Date.now() - started).toBeLessThan(2500);
    const long = await post('/v2/models/scribe-7m/generate', { ...base, stop_words: 'x'.repeat(1025) });
    expect(long.status).toBe(400);
    expect((await long.json()).error).toMatch(/stop_words\[0\] is 1025 characters long/);
    // The list forms: the schema's limits, item lengths included.
    expect((await post('/v1/completions', { model: 'scribe-7m', prompt: PROMPT, max_tokens: 2, bad_words: ['x'.repeat(1025)] })).status).toBe(400);
  });

  test('large inputs are tokenized off the event loop, to the same ids', async () => {
    const pool = new TokenizePool(server.llm);
    try {
      const items = [
        { text: `${PROMPT} `.repeat(400), addSpecialTokens: true },
        ...Array.from({ length: 20 }, (_, i) => ({ text: ` word${i} and more`, addSpecialTokens: false })),
      ];
      const ids = (await pool.encode(items)).map((list) => Array.from(list));
      expect(ids).toEqual(items.map((item) => server.llm.tokenizer.encode(item.text, { addSpecialTokens: item.addSpecialTokens })));
    } finally {
      await pool.close();
    }
    // A 1 MB prompt (tokenized in the worker) is still refused for its length, naming the limit.
    const big = await post('/v1/completions', { model: 'scribe-7m', prompt: 'x '.repeat(500_000), max_tokens: 1 });
    expect(big.status).toBe(400);
    expect((await big.json()).error.code).toBe('context_length_exceeded');
    const response = await post('/v1/completions', { model: 'scribe-7m', prompt: 'Amen. '.repeat(2000), max_tokens: 1 });
    expect(response.status).toBe(400);
    expect((await response.json()).error.code).toBe('context_length_exceeded');
    // And bad words tokenized in the worker still apply: the greedy continuation's first word is banned.
    const plain = await (await post('/v1/completions', { model: 'scribe-7m', prompt: PROMPT, max_tokens: 1, temperature: 0 })).json();
    const first = plain.choices[0].text as string;
    const banned = await (await post('/v1/completions', {
      model: 'scribe-7m', prompt: PROMPT, max_tokens: 1, temperature: 0,
      bad_words: [first, ...Array.from({ length: 20 }, (_, i) => `filler${i}`)],
    })).json();
    expect(banned.choices[0].text).not.toBe(first);
  });

  test('prompts too long for the context by their length alone are refused before tokenizing, and the 1 MB ones never reach the event loop', async () => {
    const perToken = server.llm.tokenizer.maxCharactersPerToken as number;
    const maxSeqLen = server.llm.engine.maxSeqLen;
    // The bound is (maxSeqLen - 1) x the characters one token stands for at most: any longer text
    // needs at least maxSeqLen tokens. Just past it, refused by length (no tokenizer involved)...
    const bound = (maxSeqLen - 1) * perToken;
    const tooLong = await post('/v1/completions', { model: 'scribe-7m', prompt: 'y'.repeat(bound + 1), max_tokens: 1 });
    expect(tooLong.status).toBe(400);
    const error = (await tooLong.json()).error;
    expect(error.code).toBe('context_length_exceeded');
    expect(error.message).toMatch(new RegExp(`prompt holds ${bound + 1} characters: at least ${maxSeqLen} tokens`));
    // ...and a long prompt under the bound is tokenized and refused by its token count, as before.
    const counted = await post('/v1/completions', { model: 'scribe-7m', prompt: 'Amen. '.repeat(1000), max_tokens: 1 });
    expect((await counted.json()).error.message).toMatch(/the prompt has \d+/);
    // 1 MB prompts (parsed on the worker, which keeps them: the route sees a marker and the length),
    // in each route, answered at once: no 1 MB tokenization.
    const huge = 'Amen, ye saints. '.repeat(61_000);
    const chat = await KilnServer.create({ llm: await LLM.load(engines.chatEngineDir), ownsLlm: true, modelName: 'scribe-7m', logger: false });
    const chatUrl = await chat.listen({ port: 0 });
    const postChat = (body: unknown) => fetch(`${chatUrl}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const started = Date.now();
    const answers = await Promise.all([
      post('/v1/completions', { model: 'scribe-7m', prompt: huge, max_tokens: 1 }),
      post('/v1/completions', { model: 'scribe-7m', prompt: [huge], max_tokens: 1 }),
      postChat({ model: 'scribe-7m', messages: [{ role: 'user', content: huge }] }),
      postChat({ model: 'scribe-7m', messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: [{ type: 'text', text: huge }] }] }),
      post('/v2/models/scribe-7m/generate', { text_input: huge, max_tokens: 1 }),
    ]).finally(() => chat.close({ graceMs: 0 }));
    const errors = await Promise.all(answers.map(async (answer) => ({ status: answer.status, body: await answer.json() })));
    expect(Date.now() - started).toBeLessThan(3000);  // tokenizing one of them took 1.2 s
    for (const { status, body } of errors) {
      expect(status).toBe(400);
      expect(JSON.stringify(body)).toMatch(/holds 10370\d\d characters: at least 7407\d tokens/);
    }
    expect(errors[0].body.error.param).toBe('prompt');
    expect(errors[2].body.error.param).toBe('messages');
    // A wrong model name is still named first.
    expect((await post('/v1/completions', { model: 'other', prompt: huge, max_tokens: 1 })).status).toBe(404);
    // A marker typed by a client is only text: it has no nonce (and at worst refuses its own request).
    const typed = await post('/v1/completions', { model: 'scribe-7m', prompt: '\u0000kiln-oversized-prompt:0:99999999', max_tokens: 1 });
    expect(typed.status).toBe(200);
  });

  test('large bodies parsed on the worker: invalid JSON is a 400, __proto__ is refused as by fastify, valid ones run', async () => {
    const padding = 'x'.repeat(100_000);  // past OFFLOAD_JSON_BYTES
    const send = (body: string) => fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    const invalid = await send(`{"model": "scribe-7m", "prompt": "${padding}"`);
    expect(invalid.status).toBe(400);
    expect((await invalid.json()).error.code).toBe('invalid_json');
    const poisoned = await send(`{"model": "scribe-7m", "prompt": "hi", "user": "${padding}", "__proto__": {"max_tokens": 1}}`);
    expect(poisoned.status).toBe(400);
    const valid = await send(JSON.stringify({ model: 'scribe-7m', prompt: PROMPT, max_tokens: 2, user: padding }));
    expect(valid.status).toBe(200);
    expect((await valid.json()).choices[0].finish_reason).toBe('length');
    // Streamed to the worker as it arrives: a chunked body (no Content-Length) parses, and one past the
    // limit is refused while it streams.
    const chunked = (parts: string[]) => new Promise<{ status: number; body: string }>((resolve, reject) => {
      const { hostname, port } = new URL(url);
      const request = http.request({ hostname, port, path: '/v1/completions', method: 'POST', headers: { 'content-type': 'application/json' } }, (response) => {
        let body = '';
        response.on('data', (data: Buffer) => (body += data.toString()));
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body }));
      });
      request.on('error', reject);
      for (const part of parts) request.write(part);
      request.end();
    });
    const whole = JSON.stringify({ model: 'scribe-7m', prompt: PROMPT, max_tokens: 2, user: padding });
    const streamed = await chunked([whole.slice(0, 70_000), whole.slice(70_000)]);
    expect(streamed.status).toBe(200);
    const tooLarge = await chunked([`{"model": "scribe-7m", "prompt": "hi", "user": "`, ...Array.from({ length: 12 }, () => 'z'.repeat(100_000)), '"}'])
      // The server answers 413 and closes the connection: the client may see that, or the reset.
      .catch((error: NodeJS.ErrnoException) => ({ status: error.code === 'ECONNRESET' || error.code === 'EPIPE' ? 413 : -1, body: error.code ?? '' }));
    expect(tooLarge.status).toBe(413);
    // The bad words of a large body are checked and tokenized on the worker, with the routes' limits
    // and messages, and still apply: the greedy continuation's first word is banned.
    const plain = await (await post('/v1/completions', { model: 'scribe-7m', prompt: PROMPT, max_tokens: 1, temperature: 0 })).json();
    const first = plain.choices[0].text as string;
    const banned = await post('/v1/completions', { model: 'scribe-7m', prompt: PROMPT, max_tokens: 1, temperature: 0, user: padding, bad_words: [first, 'filler'] });
    expect((await banned.json()).choices[0].text).not.toBe(first);
    const tritonBanned = await post('/v2/models/scribe-7m/generate', { text_input: PROMPT, max_tokens: 1, temperature: 0, bad_words: `${first},,filler`, pad: padding });
    expect((await tritonBanned.json()).text_output).not.toBe(first);
    // Stop words in the string form, split on the worker: the same words as the list form.
    const full = (await (await post('/v2/models/scribe-7m/generate', { text_input: PROMPT, max_tokens: 8, temperature: 0, exclude_input_in_output: true })).json()).text_output as string;
    const word = full.trim().split(/\s+/)[1];
    const stopped = await (await post('/v2/models/scribe-7m/generate', { text_input: PROMPT, max_tokens: 8, temperature: 0, exclude_input_in_output: true, pad: padding, stop_words: `,,zzz,${word}` })).json();
    expect(word.length).toBeGreaterThan(0);
    expect(stopped.text_output.length).toBeLessThan(full.length);
    expect(full.startsWith(stopped.text_output)).toBe(true);
    const refusals: [string, unknown, RegExp][] = [
      ['/v1/completions', { model: 'scribe-7m', prompt: PROMPT, max_tokens: 1, user: padding, bad_words: ['ok', 'x'.repeat(1025)] }, /bad_words\[1\] is 1025 characters long, more than the 1024 allowed/],
      ['/v1/completions', { model: 'scribe-7m', prompt: PROMPT, max_tokens: 1, user: padding, bad_words: ['ok', ''] }, /bad_words\[1\] is empty/],
      ['/v1/completions', { model: 'scribe-7m', prompt: PROMPT, max_tokens: 1, bad_words: Array.from({ length: 1024 }, (_, i) => `${i} ${'x'.repeat(890)}`) }, /bad_words\[0\] is \d+ tokens long, more than the 256 allowed/],
      ['/v1/completions', { model: 'scribe-7m', prompt: PROMPT, max_tokens: 1, user: padding, bad_words: Array.from({ length: 1025 }, () => 'w') }, /bad_words must NOT have more than 1024 items/],
      ['/v2/models/scribe-7m/generate', { text_input: PROMPT, max_tokens: 1, bad_words: Array.from({ length: 100_000 }, (_, i) => `w${i}`).join(',') }, /bad_words holds more than 1024 words/],
      ['/v2/models/scribe-7m/generate', { text_input: PROMPT, max_tokens: 1, pad: padding, bad_words: `a,${'y'.repeat(1030)}` }, /bad_words\[1\] is 1030 characters long/],
      ['/v2/models/scribe-7m/generate', { text_input: PROMPT, max_tokens: 1, stop_words: Array.from({ length: 100_000 }, (_, i) => `s${i}`).join(',') }, /stop_words holds more than 64 words/],
      ['/v2/models/scribe-7m/generate', { text_input: PROMPT, max_tokens: 1, pad: padding, stop_words: `a,,${'y'.repeat(1030)}` }, /stop_words\[1\] is 1030 characters long/],
    ];
    for (const [route, body, message] of refusals) {
      const response = await post(route, body);
      expect(response.status).toBe(400);
      expect(JSON.stringify(await response.json())).toMatch(message);
    }
  });

  test('unsupported fields are refused by name, not ignored', async () => {
    const base = { model: 'scribe-7m', prompt: PROMPT, max_tokens: 2 };
    for (const [field, value] of [['best_of', 2], ['suffix', ' the end']] as const) {
      const response = await post('/v1/completions', { ...base, [field]: value });
      expect(response.status).toBe(400);
      const { error } = await response.json();
      expect(error).toMatchObject({ param: field, code: 'unsupported_parameter' });
      expect(error.message).toMatch(new RegExp(`^${field} is not supported`));
    }
    const functions = await post('/v1/chat/completions', {
      model: 'scribe-7m', messages: [{ role: 'user', content: 'hi' }], functions: [{ name: 'f' }],
    });
    expect(functions.status).toBe(400);
    expect((await functions.json()).error.param).toBe('functions');
    // The values that mean "off" pass.
    expect((await post('/v1/completions', { ...base, best_of: 1, suffix: null })).status).toBe(200);
  });

  /** A raw HTTP/1.1 exchange; resolves with what came back and whether the server closed the socket. */
  function rawRequest(body: object, headers: string[], waitMs: number): Promise<{ text: string; closed: boolean }> {
    const { hostname, port } = new URL(url);
    const payload = JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const socket = net.connect(Number(port), hostname);
      let text = '';
      let closed = false;
      let timer: NodeJS.Timeout | undefined;
      socket.on('data', (data) => {
        text += data.toString();
        // After the last chunk of the chunked body, wait a little to see whether the server closes.
        if (text.includes('\r\n0\r\n\r\n') && !timer) timer = setTimeout(() => (socket.destroy(), resolve({ text, closed })), waitMs);
      });
      socket.on('end', () => {
        closed = true;
        clearTimeout(timer);
        socket.destroy();
        resolve({ text, closed });
      });
      socket.on('error', reject);
      socket.write(
        [`POST /v1/completions HTTP/1.1`, `Host: ${hostname}:${port}`, 'Content-Type: application/json', `Content-Length: ${Buffer.byteLength(payload)}`, ...headers, '', payload].join('\r\n'),
      );
    });
  }

  test('SSE responses honour Connection: close', async () => {
    const body = { model: 'scribe-7m', prompt: PROMPT, max_tokens: 4, stream: true };
    const closing = await rawRequest(body, ['Connection: close'], 2000);
    expect(closing.text).toMatch(/^HTTP\/1\.1 200/);
    expect(closing.text).toMatch(/\r\nconnection: close\r\n/i);
    expect(closing.text).toContain('data: [DONE]');
    expect(closing.closed).toBe(true);
    const keepAlive = await rawRequest(body, [], 300);
    expect(keepAlive.text).toMatch(/\r\nconnection: keep-alive\r\n/i);
    expect(keepAlive.closed).toBe(false);
  });

  /**
   * Opens a stream of 16 choices with logprobs (~12 MB of events, more than the loopback socket buffers
   * take), reads its first bytes, stops reading, and resolves once the executor has paused it: no step
   * for 300 ms while its 16 requests stay admitted with their KV blocks.
   */
  async function stalledStream(): Promise<{ socket: net.Socket; chunks: Buffer[] }> {
    const stats = () => server.llm.engine.executor.stats();
    const { hostname, port } = new URL(url);
    const payload = JSON.stringify({ model: 'scribe-7m', prompt: PROMPT, max_tokens: 480, temperature: 0.5, seed: 1, ignore_eos: true, logprobs: 20, n: 16, stream: true });
    const socket = net.connect(Number(port), hostname);
    const chunks: Buffer[] = [];
    socket.on('data', (data) => chunks.push(data));
    socket.write(['POST /v1/completions HTTP/1.1', `Host: ${hostname}:${port}`, 'Content-Type: application/json', `Content-Length: ${Buffer.byteLength(payload)}`, '', payload].join('\r\n'));
    await new Promise((resolve) => socket.once('data', resolve));
    socket.pause();  // stop reading: the kernel buffers fill, then the server's
    let paused = false;
    for (let i = 0; i < 50 && !paused; i++) {
      const before = stats();
      await sleep(300);
      const after = stats();
      paused = after.activeRequests === 16 && after.iterations === before.iterations;
    }
    expect(paused).toBe(true);
    return { socket, chunks };
  }
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  test('a client that stops reading pauses its request with its KV blocks held; reading again resumes it to the end', async () => {
    const stats = () => server.llm.engine.executor.stats();
    const freeBefore = stats().kvBlocksFree;
    const { socket, chunks } = await stalledStream();
    expect(stats().kvBlocksFree).toBeLessThan(freeBefore);
    const closed = new Promise<void>((resolve) => socket.once('end', () => resolve()));
    socket.resume();
    // The response ends (chunked terminator) and the whole output is there: every choice finished.
    for (let i = 0; i < 400 && !Buffer.concat(chunks).includes('\r\n0\r\n\r\n'); i++) await sleep(50);
    socket.end();
    await closed;
    const body = Buffer.concat(chunks).toString();
    expect(body).toContain('data: [DONE]');
    expect(body.match(/"finish_reason":"length"/g)?.length).toBe(16);
    for (let i = 0; i < 100 && stats().kvBlocksFree !== freeBefore; i++) await sleep(50);
    expect(stats().kvBlocksFree).toBe(freeBefore);
  });

  test('a client that never reads again is cut off after the stall timeout: request cancelled, KV blocks freed', async () => {
    const stats = () => server.llm.engine.executor.stats();
    const freeBefore = stats().kvBlocksFree;
    const { socket, chunks } = await stalledStream();
    const stalledAt = Date.now();
    for (let i = 0; i < 200 && !(stats().kvBlocksFree === freeBefore && stats().activeRequests === 0); i++) await sleep(50);
    expect(stats().kvBlocksFree).toBe(freeBefore);
    expect(stats().activeRequests).toBe(0);
    // Cut after the stall timeout (3 s here), counted from when the server's buffer filled, which the
    // pause detection above already waited some of.
    expect(Date.now() - stalledAt).toBeGreaterThanOrEqual(500);
    // The client, reading again, finds the stream cut short: no [DONE].
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.resume();
    await closed;
    expect(Buffer.concat(chunks).toString()).not.toContain('[DONE]');
  });
});

describe('truncation at shutdown', () => {
  let engines: TestEngines;

  beforeAll(async () => {
    engines = await buildTestEngines({ maxBatchSize: 8 });
  });
  afterAll(async () => {
    await engines?.cleanup();
  });

  test('each stream ends with a finish reason and an error event in its protocol\'s shape; non-streamed requests get a 503', async () => {
    const server = await KilnServer.create({ llm: await LLM.load(engines.chatEngineDir), ownsLlm: true, modelName: 'scribe-7m', logger: false });
    const url = await server.listen({ port: 0 });
    const post = (route: string, body: unknown) =>
      fetch(`${url}${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const long = { max_tokens: 480, temperature: 0, ignore_eos: true };
    const collect = async (response: Response, onFirst: () => void): Promise<string[]> => {
      const events: string[] = [];
      await readSse(response, (data) => {
        if (events.push(data) === 1) onFirst();
      });
      return events;
    };
    let started = 0;
    let closing: Promise<void> | undefined;
    const firstSeen = new Promise<void>((resolve) => {
      const seen = () => {
        if (++started === 3) resolve();
      };
      void Promise.all([
        post('/v1/completions', { model: 'scribe-7m', prompt: PROMPT, stream: true, ...long }).then((r) => collect(r, seen)),
        post('/v1/chat/completions', { model: 'scribe-7m', messages: [{ role: 'user', content: PROMPT }], stream: true, ...long }).then((r) => collect(r, seen)),
        // Triton has no ignore_eos: min_tokens keeps the end id out until the end.
        post('/v2/models/scribe-7m/generate_stream', { text_input: PROMPT, max_tokens: 480, min_tokens: 479, temperature: 0 }).then((r) => collect(r, seen)),
        post('/v1/completions', { model: 'scribe-7m', prompt: PROMPT, ...long }),
      ]).then((results) => (outcome = results));
    });
    let outcome: [string[], string[], string[], Response] | undefined;
    await firstSeen;
    closing = server.close({ graceMs: 50 });
    await closing;
    for (let i = 0; i < 100 && !outcome; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(outcome).toBeDefined();
    const [completion, chat, triton, plain] = outcome as [string[], string[], string[], Response];

    for (const events of [completion, chat]) {
      expect(events[events.length - 1]).toBe('[DONE]');
      const error = JSON.parse(events[events.length - 2]);
      expect(error.error).toMatchObject({ type: 'server_error', code: 'shutting_down' });
      const last = JSON.parse(events[events.length - 3]);
      expect(last.choices[0].finish_reason).toBe('abort');
    }
    const tritonLast = JSON.parse(triton[triton.length - 1]);
    expect(tritonLast.error).toMatch(/shutting down/);
    expect(plain.status).toBe(503);
    expect(sseData('')).toEqual([]);
  });
});
