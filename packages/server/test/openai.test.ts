// The OpenAI-compatible routes through the official `openai` client, against LLM.generate on the same
// engine (greedy): completions and chat, streamed and not, n, logprobs, usage, stop.
import OpenAI from 'openai';
import { LLM } from '@kiln/runtime';
import { KilnServer } from '@kiln/server';
import { buildTestEngines, type TestEngines } from './helpers';

const PROMPT = 'And the LORD said unto Moses,';

describe('OpenAI-compatible API', () => {
  let engines: TestEngines;
  let server: KilnServer;
  let client: OpenAI;
  let model: string;

  beforeAll(async () => {
    engines = await buildTestEngines();
    server = await KilnServer.create({ llm: await LLM.load(engines.chatEngineDir), ownsLlm: true, modelName: 'scribe-7m', logger: false });
    const url = await server.listen({ port: 0 });
    client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0 });
    model = server.modelName;
  });
  afterAll(async () => {
    await server?.close({ graceMs: 1000 });
    await engines?.cleanup();
  });

  /** LLM.generate's result, its finish reason in OpenAI's names ("eos" and "stop" are both "stop"). */
  const expected = async (prompt: string, maxTokens: number) => {
    const result = await server.llm.generate(prompt, { maxTokens });
    return { ...result, finishReason: result.finishReason === 'eos' ? 'stop' : result.finishReason };
  };

  test('GET /v1/models lists the served model', async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(['scribe-7m']);
    expect((await client.models.retrieve('scribe-7m')).id).toBe('scribe-7m');
  });

  test('completions: the same text as LLM.generate, with usage and finish_reason', async () => {
    const reference = await expected(PROMPT, 24);
    const completion = await client.completions.create({ model, prompt: PROMPT, max_tokens: 24, temperature: 0 });
    expect(completion.object).toBe('text_completion');
    expect(completion.choices).toHaveLength(1);
    expect(completion.choices[0].text).toBe(reference.text);
    expect(completion.choices[0].finish_reason).toBe(reference.finishReason);
    const promptTokens = server.llm.tokenizer.encode(PROMPT).length;
    expect(completion.usage).toEqual({ prompt_tokens: promptTokens, completion_tokens: reference.outputIds.length, total_tokens: promptTokens + reference.outputIds.length });
  });

  test('completions with a prompt of token ids', async () => {
    const ids = server.llm.tokenizer.encode(PROMPT);
    const reference = await expected(PROMPT, 8);
    const completion = await client.completions.create({ model, prompt: ids, max_tokens: 8, temperature: 0 });
    expect(completion.choices[0].text).toBe(reference.text);
  });

  test('streamed completions concatenate to the same text, then usage, then [DONE]', async () => {
    const reference = await expected(PROMPT, 24);
    const stream = await client.completions.create({ model, prompt: PROMPT, max_tokens: 24, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | undefined | null;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices) {
        text += choice.text;
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
    expect(chunks).toBeGreaterThan(2);
    expect(text).toBe(reference.text);
    expect(finish).toBe(reference.finishReason);
    expect(usage?.completion_tokens).toBe(reference.outputIds.length);
  });

  test('n: 3 returns three choices (greedy: three times the same text)', async () => {
    const reference = await expected(PROMPT, 12);
    const completion = await client.completions.create({ model, prompt: PROMPT, max_tokens: 12, temperature: 0, n: 3 });
    expect(completion.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    for (const choice of completion.choices) expect(choice.text).toBe(reference.text);
    expect(completion.usage?.completion_tokens).toBe(3 * reference.outputIds.length);

    const stream = await client.completions.create({ model, prompt: PROMPT, max_tokens: 12, temperature: 0, n: 3, stream: true });
    const texts = ['', '', ''];
    for await (const chunk of stream) for (const choice of chunk.choices) texts[choice.index] += choice.text;
    expect(texts).toEqual([reference.text, reference.text, reference.text]);
  });

  test('stop ends the text before the stop string, with finish_reason "stop"', async () => {
    const reference = await expected(PROMPT, 24);
    const stop = reference.text.slice(6, 9);
    const cut = reference.text.indexOf(stop);
    const completion = await client.completions.create({ model, prompt: PROMPT, max_tokens: 24, temperature: 0, stop: [stop] });
    expect(completion.choices[0].text).toBe(reference.text.slice(0, cut));
    expect(completion.choices[0].finish_reason).toBe('stop');
    const stream = await client.completions.create({ model, prompt: PROMPT, max_tokens: 24, temperature: 0, stop, stream: true });
    let text = '';
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
    expect(text).toBe(reference.text.slice(0, cut));
  });

  test('completions logprobs: one per token, the chosen token the most likely (greedy), consistent sums', async () => {
    const completion = await client.completions.create({ model, prompt: PROMPT, max_tokens: 8, temperature: 0, logprobs: 3 });
    const logprobs = completion.choices[0].logprobs;
    expect(logprobs).toBeTruthy();
    const { tokens, token_logprobs: tokenLogprobs, top_logprobs: topLogprobs } = logprobs as Required<NonNullable<typeof logprobs>>;
    expect(tokens.join('')).toBe(completion.choices[0].text);
    expect(tokenLogprobs).toHaveLength(completion.usage?.completion_tokens as number);
    for (let k = 0; k < tokenLogprobs.length; k++) {
      const top = Object.values(topLogprobs[k]);
      expect(top.length).toBeGreaterThanOrEqual(1);
      expect(top.length).toBeLessThanOrEqual(3);
      expect(tokenLogprobs[k]).toBeLessThanOrEqual(0);
      // Greedy: the chosen token is the most likely one.
      expect(tokenLogprobs[k]).toBeCloseTo(Math.max(...top), 5);
      // Probabilities of distinct tokens never sum past one.
      expect(top.reduce((sum, lp) => sum + Math.exp(lp), 0)).toBeLessThanOrEqual(1 + 1e-5);
    }
    // Streaming gives the same logprobs.
    const stream = await client.completions.create({ model, prompt: PROMPT, max_tokens: 8, temperature: 0, logprobs: 3, stream: true });
    const streamed: number[] = [];
    for await (const chunk of stream) streamed.push(...(chunk.choices[0]?.logprobs?.token_logprobs ?? []));
    expect(streamed.length).toBe(tokenLogprobs.length);
    streamed.forEach((lp, k) => expect(lp).toBeCloseTo(tokenLogprobs[k], 4));
  });

  test('chat: the template-rendered prompt gives the same text as LLM.generate, streamed and not', async () => {
    const messages = [{ role: 'system' as const, content: 'Scripture.' }, { role: 'user' as const, content: PROMPT }];
    const rendered = `<|endoftext|><|system|>\nScripture.\n<|user|>\n${PROMPT}\n<|assistant|>\n`;
    const reference = await expected(rendered, 20);
    const chat = await client.chat.completions.create({ model, messages, max_tokens: 20, temperature: 0 });
    expect(chat.object).toBe('chat.completion');
    expect(chat.choices[0].message).toMatchObject({ role: 'assistant', content: reference.text });
    expect(chat.choices[0].finish_reason).toBe(reference.finishReason);
    expect(chat.usage?.prompt_tokens).toBe(server.llm.tokenizer.encode(rendered).length);

    const stream = await client.chat.completions.create({ model, messages, max_tokens: 20, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let role: string | undefined;
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | undefined | null;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices) {
        role ??= choice.delta.role;
        text += choice.delta.content ?? '';
        finish = choice.finish_reason ?? finish;
      }
    }
    expect(role).toBe('assistant');
    expect(text).toBe(reference.text);
    expect(finish).toBe(reference.finishReason);
    expect(usage?.completion_tokens).toBe(reference.outputIds.length);
  });

  test('chat: n: 3 and logprobs with top_logprobs', async () => {
    const messages = [{ role: 'user' as const, content: PROMPT }];
    const chat = await client.chat.completions.create({ model, messages, max_tokens: 6, temperature: 0, n: 3, logprobs: true, top_logprobs: 2 });
    expect(chat.choices).toHaveLength(3);
    expect(new Set(chat.choices.map((c) => c.message.content)).size).toBe(1);
    const content = chat.choices[0].logprobs?.content ?? [];
    expect(content.length).toBe(chat.usage?.completion_tokens ? chat.usage.completion_tokens / 3 : -1);
    for (const entry of content) {
      expect(entry.top_logprobs).toHaveLength(2);
      expect(entry.logprob).toBeCloseTo(entry.top_logprobs[0].logprob, 5);
      expect(entry.top_logprobs[0].logprob).toBeGreaterThanOrEqual(entry.top_logprobs[1].logprob);
    }
  });
});
