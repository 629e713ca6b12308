// A tokenizer whose post-processor adds a BOS (as Llama's does) together with a chat template that
// writes `{{ bos_token }}` itself: the chat route must not add a second BOS, while a completion prompt
// still gets the post-processor's one (as transformers and vLLM do).
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import OpenAI from 'openai';
import { LLM } from '@kiln/runtime';
import { KilnServer } from '@kiln/server';
import { buildTestEngines, type TestEngines } from './helpers';

const BOS = 0; // scribe-7m's <|endoftext|>

describe('special tokens in chat prompts', () => {
  let engines: TestEngines;
  let server: KilnServer;
  let client: OpenAI;

  beforeAll(async () => {
    engines = await buildTestEngines({ maxBatchSize: 8 });
    const tokenizerPath = path.join(engines.chatEngineDir, 'tokenizer.json');
    const tokenizer = JSON.parse(await fs.readFile(tokenizerPath, 'utf8')) as Record<string, unknown>;
    tokenizer.post_processor = {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<|endoftext|>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<|endoftext|>': { id: '<|endoftext|>', ids: [BOS], tokens: ['<|endoftext|>'] } },
    };
    await fs.writeFile(tokenizerPath, JSON.stringify(tokenizer));
    server = await KilnServer.create({ llm: await LLM.load(engines.chatEngineDir), ownsLlm: true, modelName: 'm', logger: false });
    client = new OpenAI({ baseURL: `${await server.listen({ port: 0 })}/v1`, apiKey: 'none', maxRetries: 0 });
  });
  afterAll(async () => {
    await server?.close({ graceMs: 1000 });
    await engines?.cleanup();
  });

  test('the post-processor adds a BOS to plain text', () => {
    expect(server.llm.tokenizer.encode('In the beginning')[0]).toBe(BOS);
    expect(server.llm.tokenizer.encode('In the beginning', { addSpecialTokens: false })[0]).not.toBe(BOS);
  });

  test('a chat prompt holds exactly the template\'s BOS; a completion prompt the post-processor\'s', async () => {
    const messages = [{ role: 'user' as const, content: 'In the beginning' }];
    const rendered = `<|endoftext|><|user|>\nIn the beginning\n<|assistant|>\n`;
    const chatIds = server.llm.tokenizer.encode(rendered, { addSpecialTokens: false });
    expect(chatIds[0]).toBe(BOS);
    expect(chatIds[1]).not.toBe(BOS);
    const chat = await client.chat.completions.create({ model: 'm', messages, max_tokens: 4, temperature: 0 });
    expect(chat.usage?.prompt_tokens).toBe(chatIds.length);

    const completion = await client.completions.create({ model: 'm', prompt: 'In the beginning', max_tokens: 4, temperature: 0 });
    expect(completion.usage?.prompt_tokens).toBe(server.llm.tokenizer.encode('In the beginning').length);
  });
});
