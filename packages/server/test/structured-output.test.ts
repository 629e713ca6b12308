// Structured output through the official `openai` client (issue 14): response_format json_schema and
// json_object on /v1/chat/completions and /v1/completions, streamed and not, sampled at temperature 1;
// every answer parses and validates with ajv. Schemas the grammar cannot enforce get a 400 naming the
// path at fault. And chat on the default model, scribe-7m with its own chat template.
import Ajv2020 from 'ajv/dist/2020';
import addFormats from 'ajv-formats';
import OpenAI from 'openai';
import { LLM } from '@kiln/runtime';
import { KilnServer } from '@kiln/server';
import { buildTestEngines, type TestEngines } from './helpers';

const SCHEMA = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 16 },
    age: { type: 'integer', minimum: 0, maximum: 120 },
    tribe: { enum: ['Judah', 'Levi', 'Dan'] },
    born: { type: 'string', format: 'date' },
    children: { type: 'array', items: { type: 'string', maxLength: 10 }, minItems: 1, maxItems: 3 },
  },
  required: ['name', 'age', 'tribe', 'born', 'children'],
  additionalProperties: false,
};

function validate(schema: object, value: unknown): boolean {
  const ajv = new Ajv2020({ strict: false });
  addFormats(ajv);
  return ajv.validate(schema, value);
}

describe('response_format through the openai client', () => {
  let engines: TestEngines;
  let server: KilnServer;
  let client: OpenAI;

  beforeAll(async () => {
    engines = await buildTestEngines();
    server = await KilnServer.create({ llm: await LLM.load(engines.chatEngineDir), ownsLlm: true, modelName: 'scribe-7m', logger: false });
    const url = await server.listen({ port: 0 });
    client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0 });
  });
  afterAll(async () => {
    await server?.close({ graceMs: 1000 });
    await engines?.cleanup();
  });

  const messages = [{ role: 'user' as const, content: 'Describe a person of Israel as JSON.' }];

  test('json_schema (strict) gives valid JSON, for each of n choices at temperature 1', async () => {
    const completion = await client.chat.completions.create({
      model: 'scribe-7m',
      messages,
      max_tokens: 200,
      temperature: 1,
      seed: 7,
      n: 4,
      response_format: { type: 'json_schema', json_schema: { name: 'person', schema: SCHEMA, strict: true } },
    });
    expect(completion.choices).toHaveLength(4);
    for (const choice of completion.choices) {
      expect(choice.finish_reason).toBe('stop');
      expect(validate(SCHEMA, JSON.parse(choice.message.content ?? ''))).toBe(true);
    }
  });

  test('streamed json_schema assembles to valid JSON', async () => {
    const stream = await client.chat.completions.create({
      model: 'scribe-7m',
      messages,
      max_tokens: 200,
      temperature: 1,
      seed: 11,
      stream: true,
      response_format: { type: 'json_schema', json_schema: { name: 'person', schema: SCHEMA } },
    });
    let content = '';
    let finish: string | null = null;
    for await (const chunk of stream) {
      content += chunk.choices[0]?.delta?.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(finish).toBe('stop');
    expect(validate(SCHEMA, JSON.parse(content))).toBe(true);
  });

  test('json_object on completions and chat gives a JSON object', async () => {
    const completion = await client.completions.create({ model: 'scribe-7m', prompt: 'And the LORD said', max_tokens: 120, temperature: 0.7, seed: 3, response_format: { type: 'json_object' } } as never);
    const text = (completion as unknown as { choices: { text: string }[] }).choices[0].text;
    const value = JSON.parse(text);
    expect(typeof value === 'object' && value !== null && !Array.isArray(value)).toBe(true);
    const chat = await client.chat.completions.create({ model: 'scribe-7m', messages, max_tokens: 120, temperature: 0.7, seed: 4, response_format: { type: 'json_object' } });
    expect(typeof JSON.parse(chat.choices[0].message.content ?? '')).toBe('object');
  });

  test.each<[object, string]>([
    [{ type: 'object', properties: { n: { type: 'integer', multipleOf: 3 } } }, 'response_format.json_schema.schema.properties.n.multipleOf'],
    [{ type: 'object', properties: { tags: { type: 'array', uniqueItems: true } } }, 'response_format.json_schema.schema.properties.tags.uniqueItems'],
    [{ type: 'object', properties: { a: { $ref: '#/$defs/missing' } } }, 'response_format.json_schema.schema.properties.a.$ref'],
    [{ type: 'object', properties: { s: { type: 'string', pattern: '([a-z' } } }, 'response_format.json_schema.schema.properties.s.pattern'],
    [{ type: 'objekt' }, 'response_format.json_schema.schema.type'],
  ])('an unsupported or invalid schema gets 400 naming its path (%j)', async (schema, param) => {
    const error = await client.chat.completions
      .create({ model: 'scribe-7m', messages, max_tokens: 10, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: schema as Record<string, unknown> } } })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.APIError);
    expect((error as InstanceType<typeof OpenAI.APIError>).status).toBe(400);
    expect((error as { param?: string }).param).toBe(param);
  });

  test('Triton generate: TensorRT-LLM\'s guided_decoding_guide_type / guided_decoding_guide', async () => {
    const url = `${client.baseURL.replace(/\/v1$/, '')}/v2/models/scribe-7m/generate`;
    const post = (body: object) => fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const base = { text_input: 'And the LORD said', max_tokens: 200, temperature: 1, random_seed: 5 };
    const schema = await post({ ...base, guided_decoding_guide_type: 'json_schema', guided_decoding_guide: JSON.stringify(SCHEMA) });
    expect(schema.status).toBe(200);
    const result = await schema.json();
    expect(result.finish_reason).toBe('end_id');
    expect(validate(SCHEMA, JSON.parse(result.text_output))).toBe(true);
    const json = await (await post({ ...base, guided_decoding_guide_type: 'json' })).json();
    expect(typeof JSON.parse(json.text_output)).toBe('object');
    const regex = await (await post({ ...base, max_tokens: 30, guided_decoding_guide_type: 'regex', guided_decoding_guide: '[0-9]{3}-[a-z]{2}' })).json();
    expect(regex.text_output).toMatch(/^[0-9]{3}-[a-z]{2}$/);
    const grammar = await (await post({ ...base, max_tokens: 30, guided_decoding_guide_type: 'ebnf_grammar', guided_decoding_guide: 'root ::= "amen" | "selah"' })).json();
    expect(['amen', 'selah']).toContain(grammar.text_output);
    for (const [body, message] of [
      [{ guided_decoding_guide_type: 'json_schema', guided_decoding_guide: '{"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 2}}}' }, /^guided_decoding_guide\.properties\.n\.multipleOf: /],
      [{ guided_decoding_guide_type: 'json_schema', guided_decoding_guide: '{not json' }, /^guided_decoding_guide: not JSON/],
      [{ guided_decoding_guide_type: 'structural_tag', guided_decoding_guide: '{}' }, /^guided_decoding_guide_type "structural_tag" is not supported/],
      [{ guided_decoding_guide: '{}' }, /needs guided_decoding_guide_type/],
    ] as const) {
      const response = await post({ ...base, ...body });
      expect(response.status).toBe(400);
      expect((await response.json()).error).toMatch(message);
    }
  });

  test('an unknown response_format type or field is refused by name', async () => {
    for (const [format, param] of [
      [{ type: 'xml' }, 'response_format.type'],
      [{ type: 'json_schema', json_schema: { name: 'x', schema: {}, extra: 1 } }, 'response_format.json_schema.extra'],
      [{ type: 'json_schema' }, 'response_format.json_schema'],
    ] as const) {
      const error = await client.chat.completions.create({ model: 'scribe-7m', messages, max_tokens: 4, response_format: format as never }).catch((e: unknown) => e);
      expect((error as InstanceType<typeof OpenAI.APIError>).status).toBe(400);
      expect((error as { param?: string }).param).toBe(param);
    }
  });
});

describe('tools through the openai client', () => {
  let engines: TestEngines;
  let server: KilnServer;
  let client: OpenAI;
  const weather = {
    type: 'object',
    properties: { city: { type: 'string', maxLength: 20 }, unit: { enum: ['celsius', 'fahrenheit'] }, days: { type: 'integer', minimum: 1, maximum: 7 } },
    required: ['city', 'unit'],
    additionalProperties: false,
  };
  const tools = [
    { type: 'function' as const, function: { name: 'get_weather', description: 'The forecast', parameters: weather } },
    { type: 'function' as const, function: { name: 'count_tribes', parameters: { type: 'object', properties: { land: { type: 'string', maxLength: 12 } }, required: ['land'] } } },
  ];
  const messages = [{ role: 'user' as const, content: 'What is the weather in Jerusalem?' }];

  beforeAll(async () => {
    engines = await buildTestEngines();
    server = await KilnServer.create({ llm: await LLM.load(engines.defaultEngineDir), ownsLlm: true, modelName: 'scribe-7m', logger: false });
    const url = await server.listen({ port: 0 });
    client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0 });
  });
  afterAll(async () => {
    await server?.close({ graceMs: 1000 });
    await engines?.cleanup();
  });

  test('tool_choice required: tool_calls whose arguments validate, for each of n choices', async () => {
    const completion = await client.chat.completions.create({ model: 'scribe-7m', messages, tools, tool_choice: 'required', max_tokens: 120, temperature: 1, seed: 2, n: 4 });
    for (const choice of completion.choices) {
      expect(choice.finish_reason).toBe('tool_calls');
      const calls = choice.message.tool_calls ?? [];
      expect(calls).toHaveLength(1);
      const call = calls[0] as { id: string; type: string; function: { name: string; arguments: string } };
      expect(call.type).toBe('function');
      expect(call.id).toMatch(/^call_/);
      const tool = tools.find((t) => t.function.name === call.function.name);
      expect(tool).toBeDefined();
      expect(validate(tool!.function.parameters, JSON.parse(call.function.arguments))).toBe(true);
    }
  });

  test('a named function is the one called; streamed, the deltas assemble to the same call', async () => {
    const request = { model: 'scribe-7m', messages, tools, tool_choice: { type: 'function' as const, function: { name: 'get_weather' } }, max_tokens: 120, temperature: 1, seed: 9 };
    const whole = await client.chat.completions.create(request);
    const call = whole.choices[0].message.tool_calls?.[0] as { function: { name: string; arguments: string } };
    expect(call.function.name).toBe('get_weather');
    expect(validate(weather, JSON.parse(call.function.arguments))).toBe(true);
    const stream = await client.chat.completions.create({ ...request, stream: true });
    const assembled: { id?: string; name: string; arguments: string }[] = [];
    let finish: string | null = null;
    let argumentDeltas = 0;
    for await (const chunk of stream) {
      for (const delta of chunk.choices[0]?.delta?.tool_calls ?? []) {
        assembled[delta.index] ??= { name: '', arguments: '' };
        if (delta.id) assembled[delta.index].id = delta.id;
        assembled[delta.index].name += delta.function?.name ?? '';
        assembled[delta.index].arguments += delta.function?.arguments ?? '';
        if (delta.function?.arguments) argumentDeltas++;
      }
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(finish).toBe('tool_calls');
    expect(assembled).toHaveLength(1);
    expect(assembled[0].name).toBe(call.function.name);
    expect(assembled[0].arguments).toBe(call.function.arguments);  // same seed, same call
    // The arguments are streamed as the model writes them, not in one piece at the end.
    expect(argumentDeltas).toBeGreaterThan(3);
  });

  test('tool_choice none gives plain content', async () => {
    const completion = await client.chat.completions.create({ model: 'scribe-7m', messages, tools, tool_choice: 'none', max_tokens: 16, temperature: 0 });
    expect(completion.choices[0].message.tool_calls ?? []).toEqual([]);
    expect(typeof completion.choices[0].message.content).toBe('string');
    expect(completion.choices[0].finish_reason).not.toBe('tool_calls');
  });

  test('bad tools are refused naming the path', async () => {
    for (const [extra, param] of [
      [{ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { n: { type: 'integer', multipleOf: 2 } } } } }] }, 'tools[0].function.parameters.properties.n.multipleOf'],
      [{ tools: [{ type: 'function', function: { name: 'bad name' } }] }, 'tools[0].function.name'],
      [{ tools, tool_choice: { type: 'function', function: { name: 'nope' } } }, 'tool_choice.function.name'],
      [{ tool_choice: 'required' }, 'tool_choice'],
    ] as const) {
      const error = await client.chat.completions.create({ model: 'scribe-7m', messages, max_tokens: 4, ...(extra as object) } as never).catch((e: unknown) => e);
      expect((error as InstanceType<typeof OpenAI.APIError>).status).toBe(400);
      expect((error as { param?: string }).param).toBe(param);
    }
  });
});

describe('the default model chats', () => {
  let engines: TestEngines;
  let server: KilnServer;
  let client: OpenAI;

  beforeAll(async () => {
    engines = await buildTestEngines();
    server = await KilnServer.create({ llm: await LLM.load(engines.defaultEngineDir), ownsLlm: true, modelName: 'scribe-7m', logger: false });
    const url = await server.listen({ port: 0 });
    client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0 });
  });
  afterAll(async () => {
    await server?.close({ graceMs: 1000 });
    await engines?.cleanup();
  });

  test('/v1/chat/completions answers 200 with scribe-7m\'s template, streamed too', async () => {
    const messages = [
      { role: 'system' as const, content: 'The words of the preacher.' },
      { role: 'user' as const, content: 'Who led the people out of Egypt?' },
    ];
    const completion = await client.chat.completions.create({ model: 'scribe-7m', messages, max_tokens: 24, temperature: 0 });
    const prompt = 'The words of the preacher.\n\nQuestion: Who led the people out of Egypt?\nAnswer:';
    const reference = await server.llm.generate(prompt, { maxTokens: 24 });
    expect(completion.choices[0].message.content).toBe(reference.text);
    expect(completion.usage?.prompt_tokens).toBe(server.llm.tokenizer.encode(prompt, { addSpecialTokens: false }).length);
    let streamed = '';
    for await (const chunk of await client.chat.completions.create({ model: 'scribe-7m', messages, max_tokens: 24, temperature: 0, stream: true })) {
      streamed += chunk.choices[0]?.delta?.content ?? '';
    }
    expect(streamed).toBe(reference.text);
  });
});
