// ChatSession on the built-in scribe-7m (its own chat template): the history, each prompt rendered by
// the template and answered as LLM.generate answers that rendering, streaming, reset, a template file.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildEngine } from '@kiln/builder';
import { convertCheckpoint } from '@kiln/convert';
import { ChatSession, defineChatSessionFunction, LLM } from '@kiln/runtime';
import { scribe7mPath } from '@kiln/scribe-7m';

let tmpDir: string;
let llm: LLM;

beforeAll(async () => {
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-chat-session-'));
  await convertCheckpoint({ modelDir: scribe7mPath, outputDir: path.join(tmpDir, 'checkpoint') });
  await buildEngine({ checkpointDir: path.join(tmpDir, 'checkpoint'), outputDir: path.join(tmpDir, 'scribe'), config: { maxBatchSize: 4 } });
  llm = await LLM.load(path.join(tmpDir, 'scribe'), { numThreads: 2 });
}, 300000);

afterAll(async () => {
  await llm?.dispose();
  fs.rmSync(tmpDir, { recursive: true, force: true });
});

it('keeps the history, streams each answer and resets', async () => {
  const session = await ChatSession.create(llm, { systemPrompt: 'The words of the preacher.' });
  const streamed: string[] = [];
  const first = await session.prompt('Who led the people out of Egypt?', { maxTokens: 20, onText: (delta) => streamed.push(delta) });
  const firstPrompt = 'The words of the preacher.\n\nQuestion: Who led the people out of Egypt?\nAnswer:';
  const expected = await llm.generate(llm.tokenizer.encode(firstPrompt, { addSpecialTokens: false }), { maxTokens: 20 });
  expect(first.text).toBe(expected.text);
  expect(streamed.join('')).toBe(first.text);
  expect(session.messages.map((m) => m.role)).toEqual(['system', 'user', 'assistant']);

  const second = await session.prompt('And then?', { maxTokens: 12 });
  const secondPrompt = `${firstPrompt} ${first.text.trim()}<|endoftext|>\nQuestion: And then?\nAnswer:`;
  const expectedSecond = await llm.generate(llm.tokenizer.encode(secondPrompt, { addSpecialTokens: false }), { maxTokens: 12 });
  expect(second.text).toBe(expectedSecond.text);
  expect(session.messages).toHaveLength(5);

  session.reset();
  expect(session.messages).toEqual([{ role: 'system', content: 'The words of the preacher.' }]);
});

it('takes a chat template file, and refuses a model without any', async () => {
  const file = path.join(tmpDir, 'plain.jinja');
  fs.writeFileSync(file, "{% for m in messages %}{{ m['content'] + '\\n' }}{% endfor %}");
  const session = await ChatSession.create(llm, { chatTemplateFile: file });
  const answer = await session.prompt('In the beginning', { maxTokens: 8 });
  expect(answer.text).toBe((await llm.generate(llm.tokenizer.encode('In the beginning\n', { addSpecialTokens: false }), { maxTokens: 8 })).text);
  const bare = path.join(tmpDir, 'bare');
  fs.cpSync(path.join(tmpDir, 'scribe'), bare, { recursive: true });
  fs.rmSync(path.join(bare, 'chat_template.jinja'));
  const bareLlm = await LLM.load(bare, { numThreads: 1 });
  try {
    await expect(ChatSession.create(bareLlm)).rejects.toThrow(/has no chat template/);
  } finally {
    await bareLlm.dispose();
  }
});

it('calls functions between turns: a required call\'s arguments validate, its result reaches the model', async () => {
  const calls: unknown[] = [];
  const getWeather = defineChatSessionFunction<{ city: string; unit: 'celsius' | 'fahrenheit' }>({
    description: 'The forecast',
    params: { type: 'object', properties: { city: { type: 'string', maxLength: 12 }, unit: { enum: ['celsius', 'fahrenheit'] } }, required: ['city', 'unit'], additionalProperties: false },
    handler(params) {
      calls.push(params);
      return { forecast: 'sun', city: params.city };
    },
  });
  const session = await ChatSession.create(llm);
  const answer = await session.prompt('What is the weather in Jerusalem?', {
    functions: { getWeather },
    functionCall: 'required',
    maxTokens: 150,
    temperature: 1,
    seed: 4,
  });
  expect([calls.length, session.messages[1]?.content]).toEqual([1, expect.anything()]);
  const params = calls[0] as { city: string; unit: string };
  expect(typeof params.city).toBe('string');
  expect(params.city.length).toBeLessThanOrEqual(12);
  expect(['celsius', 'fahrenheit']).toContain(params.unit);
  const roles = session.messages.map((m) => m.role);
  expect(roles.slice(0, 3)).toEqual(['user', 'assistant', 'tool']);
  expect(session.messages[1].content).toMatch(/^<tool_call>\n\{\s*"name": "getWeather"/);
  expect(JSON.parse(session.messages[2].content)).toEqual({ forecast: 'sun', city: params.city });
  expect(roles[roles.length - 1]).toBe('assistant');
  expect(session.messages[session.messages.length - 1].content).toBe(answer.text.trim());
});
