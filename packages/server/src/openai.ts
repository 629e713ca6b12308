// OpenAI-compatible routes: GET /v1/models, POST /v1/completions, POST /v1/chat/completions, streamed
// (SSE ending with `data: [DONE]`) or not, with n choices, logprobs and usage. vLLM's extra sampling
// fields (top_k, min_p, repetition_penalty, ...) and Kiln's beam_width are accepted in the body.
import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { MAX_STOP_TEXT } from '@kiln/sampling';
import { compactJson, parseToolCalls, readPartialCall, TOOL_CALL_OPEN, validateToolChoice, validateTools, type CompiledFormat, type ToolCall } from '@kiln/chat';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ChatTemplateError, type ChatMessage } from '@kiln/chat';
import { abortedByShutdown, ShutdownAbort, SseWriter, type ServerContext } from './context';
import { ApiError, errorBody, toApiError } from './errors';
import { collectChoice, startChoice, type Choice, type ChoiceFinishReason, type ChoiceRequest, type TokenLogprob } from './generation';
import { chatCompletionsBody, completionsBody } from './schemas';

interface SamplingBody {
  model: string;
  max_tokens?: number | null;
  n?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  stop?: string | string[] | null;
  seed?: number | null;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  logit_bias?: Record<string, number> | null;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean; continuous_usage_stats?: boolean } | null;
  top_k?: number;
  min_p?: number;
  repetition_penalty?: number;
  beam_width?: number;
  length_penalty?: number;
  ignore_eos?: boolean;
  min_tokens?: number;
  bad_words?: string[];
  stop_token_ids?: number[];
}

interface CompletionsBody extends SamplingBody {
  prompt: string | (number | string)[];
  logprobs?: number | null;
  echo?: boolean | null;
  suffix?: string | null;
  best_of?: number | null;
}

interface ChatBody extends SamplingBody {
  messages: { role: string; content?: string | { type: string; text?: string }[] | null; name?: string }[];
  tools?: unknown;
  tool_choice?: unknown;
  max_completion_tokens?: number | null;
  logprobs?: boolean | null;
  top_logprobs?: number | null;
}

type Kind = 'completion' | 'chat';

interface Plan {
  kind: Kind;
  n: number;
  choice: Omit<ChoiceRequest, 'signal'>;
  stream: boolean;
  includeUsage: boolean;
  continuousUsage: boolean;
  /** Top alternatives per token in the response, or undefined for no logprobs. */
  topLogprobs?: number;
  /** response_format's grammar: each choice gets its own mask source; disposed after the response. */
  format?: CompiledFormat;
  /** Chat with tools (tool_choice other than none): outputs are searched for tool calls. */
  toolCalls?: boolean;
  /** The call is forced by a grammar (tool_choice required or a function): streamed as it is written. */
  forcedToolCall?: boolean;
}

/**
 * Fields of OpenAI's API this server does not implement. They are refused by name: ignoring them would
 * answer something other than what was asked (best_of > 1 is not n, a suffix is not a completion, a
 * tool call or a JSON schema is not free text). `null`, and the values that mean "off", pass.
 */
function refuseUnsupported(body: Record<string, unknown>): void {
  const refuse = (param: string, why: string): never => {
    throw new ApiError(400, `${param} is not supported by this server: ${why}`, 'invalid_request_error', param, 'unsupported_parameter');
  };
  if (body.best_of != null && body.best_of !== 1) refuse('best_of', 'ask for n choices instead, and rank them yourself');
  if (typeof body.suffix === 'string' && body.suffix.length > 0) refuse('suffix', 'insertion (fill-in-the-middle) is not implemented');
  // The deprecated forms of tools and tool_choice.
  if (Array.isArray(body.functions) && body.functions.length > 0) refuse('functions', 'give tools instead');
  if (body.function_call != null && body.function_call !== 'none' && body.function_call !== 'auto') refuse('function_call', 'give tool_choice instead');
}

/**
 * OpenAI's response_format ({"type": "text" | "json_object"}, or {"type": "json_schema", "json_schema":
 * {"name", "schema", "strict", "description"}}) compiled into a grammar; undefined for none or text.
 * A bad or unsupported schema is a 400 naming its path (response_format.json_schema.schema...).
 */
async function responseFormat(ctx: ServerContext, body: SamplingBody & { response_format?: unknown }): Promise<CompiledFormat | undefined> {
  const format = body.response_format;
  if (format == null) return undefined;
  const bad = (param: string, message: string): never => {
    throw new ApiError(400, `${param}: ${message}`, 'invalid_request_error', param);
  };
  if (typeof format !== 'object' || Array.isArray(format)) bad('response_format', 'must be an object with a type');
  const { type, json_schema: jsonSchema, ...rest } = format as { type?: unknown; json_schema?: unknown };
  for (const key of Object.keys(rest)) bad(`response_format.${key}`, 'is not a field of response_format');
  const options = { endId: undefined, ignoreEos: body.ignore_eos };
  if (type === 'text' || type === 'json_object') {
    if (jsonSchema !== undefined) bad('response_format.json_schema', `is not a field of a ${type} response_format`);
    return ctx.llm.compileResponseFormat({ type }, { ...options, field: 'response_format' });
  }
  if (type !== 'json_schema') return bad('response_format.type', 'must be "text", "json_object" or "json_schema"');
  if (typeof jsonSchema !== 'object' || jsonSchema === null || Array.isArray(jsonSchema)) return bad('response_format.json_schema', 'must be an object with a name and a schema');
  const { name, schema, strict, description, ...others } = jsonSchema as Record<string, unknown>;
  for (const key of Object.keys(others)) bad(`response_format.json_schema.${key}`, 'is not a field of json_schema');
  if (typeof name !== 'string' || !/^[a-zA-Z0-9_-]{1,64}$/.test(name)) bad('response_format.json_schema.name', 'must be 1 to 64 letters, digits, _ or -');
  if (description !== undefined && typeof description !== 'string') bad('response_format.json_schema.description', 'must be a string');
  if (schema === undefined) bad('response_format.json_schema.schema', 'is required: structured output needs the schema to enforce');
  return ctx.llm.compileResponseFormat(
    { type: 'json_schema', schema, ...(strict === undefined || strict === null ? {} : { strict }) },
    { ...options, field: 'response_format.json_schema' },
  );
}

/** The sampling part of a body, as the runtime's SamplingConfig; bad words as token ids from `badWords`. */
function sampling(body: SamplingBody, badWords: number[][]): Omit<ChoiceRequest, 'signal' | 'inputIds' | 'maxTokens' | 'logprobs'> {
  const stop = body.stop == null ? [] : typeof body.stop === 'string' ? [body.stop] : body.stop;
  const embeddingBias = body.logit_bias ? Object.fromEntries(Object.entries(body.logit_bias).map(([id, bias]) => [Number(id), bias])) : undefined;
  if (body.beam_width !== undefined && body.beam_width > 1 && (body.n ?? 1) > 1) {
    throw new ApiError(400, 'n > 1 with beam_width > 1 is not supported: ask for one choice per beam search', 'invalid_request_error', 'n');
  }
  return {
    // OpenAI's default temperature is 1; 0 is greedy.
    temperature: body.temperature ?? 1,
    topP: body.top_p ?? undefined,
    // vLLM spells "off" -1 as well as 0.
    topK: body.top_k === undefined || body.top_k === -1 ? undefined : body.top_k,
    minP: body.min_p,
    repetitionPenalty: body.repetition_penalty,
    presencePenalty: body.presence_penalty ?? undefined,
    frequencyPenalty: body.frequency_penalty ?? undefined,
    seed: body.seed ?? undefined,
    embeddingBias,
    beamWidth: body.beam_width,
    lengthPenalty: body.length_penalty,
    ignoreEos: body.ignore_eos,
    minTokens: body.min_tokens,
    badWords: body.bad_words === undefined ? undefined : badWords,
    stopWords: body.stop_token_ids?.map((id) => [id]),
    stop,
  };
}

/** The prompt's text, or its token ids when given as ids (checked against the vocabulary). */
function completionPrompt(ctx: ServerContext, prompt: CompletionsBody['prompt']): string | number[] {
  if (typeof prompt === 'string') return prompt;
  if (prompt.every((item) => typeof item === 'number')) return ctx.checkTokenIds(prompt as number[], 'prompt');
  if (prompt.length === 1 && typeof prompt[0] === 'string') return prompt[0];
  throw new ApiError(400, 'prompt must be a string, a list of token ids, or a list of one string (batches of prompts are not supported)', 'invalid_request_error', 'prompt');
}

/**
 * Tokenizes the prompt (when it is text) and the bad words in one call, off the event loop when they
 * are large. Everything cheap (counts, lengths, types) was checked first, by the schema.
 */
async function tokenizeInputs(ctx: ServerContext, prompt: { text: string; param: string; addSpecialTokens: boolean } | number[], body: SamplingBody, maxTokensParam = 'max_tokens'): Promise<{ inputIds: number[]; badWords: number[][] }> {
  // A large body's bad words were checked and tokenized by the worker that parsed it.
  const fromWorker = ctx.badWordsFromWorker(body);
  if (fromWorker !== undefined) {
    if (Array.isArray(prompt)) return { inputIds: prompt, badWords: fromWorker };
    const [inputIds] = await ctx.tokenizeMany([{ ...prompt, check: ctx.promptCheck(prompt.param, maxTokensParam), prompt: true }]);
    return { inputIds, badWords: fromWorker };
  }
  const words = (body.bad_words ?? []).map((text, i) => {
    if (text.length === 0) throw new ApiError(400, `bad_words[${i}] is empty`, 'invalid_request_error', 'bad_words');
    if (text.length > MAX_STOP_TEXT) {
      throw new ApiError(400, `bad_words[${i}] is ${text.length} characters long, more than the ${MAX_STOP_TEXT} allowed`, 'invalid_request_error', 'bad_words');
    }
    return { text, param: 'bad_words', addSpecialTokens: false, check: ctx.badWordCheck('bad_words', i) };
  });
  if (Array.isArray(prompt)) return { inputIds: prompt, badWords: await ctx.tokenizeMany(words) };
  const [inputIds, ...badWords] = await ctx.tokenizeMany([{ ...prompt, check: ctx.promptCheck(prompt.param, maxTokensParam), prompt: true }, ...words]);
  return { inputIds, badWords };
}

function chatMessages(ctx: ServerContext, body: ChatBody): ChatMessage[] {
  // Contents too long for any prompt (kept on the tokenizer worker, see TokenizePool.oversized) are
  // refused before the template renders them; so is a conversation whose length alone is too long.
  let length = 0;
  const counted = (text: string): string => {
    length += ctx.oversizedLength(text) ?? text.length;
    ctx.checkPromptCharacters(length, 'messages');
    return text;
  };
  return body.messages.map((message, index) => {
    let content = '';
    if (typeof message.content === 'string') content = counted(message.content);
    else if (Array.isArray(message.content)) {
      for (const part of message.content) {
        if (part.type !== 'text' || typeof part.text !== 'string') {
          throw new ApiError(400, `messages[${index}].content: only text parts ({"type": "text", "text": ...}) are supported, got type ${JSON.stringify(part.type)}`, 'invalid_request_error', 'messages');
        }
        content += counted(part.text);
      }
    }
    return message.name === undefined ? { role: message.role, content } : { role: message.role, content, name: message.name };
  });
}

async function planCompletion(ctx: ServerContext, body: CompletionsBody): Promise<Plan> {
  ctx.checkModel(body.model, 'openai');
  if (body.echo) throw new ApiError(400, 'echo is not supported', 'invalid_request_error', 'echo');
  refuseUnsupported(body as unknown as Record<string, unknown>);
  const prompt = completionPrompt(ctx, body.prompt);
  const { inputIds, badWords } = await tokenizeInputs(ctx, typeof prompt === 'string' ? { text: prompt, param: 'prompt', addSpecialTokens: true } : prompt, body);
  // OpenAI's default max_tokens for completions is 16.
  const maxTokens = ctx.checkLengths(inputIds.length, body.max_tokens ?? 16, 'prompt', 'max_tokens');
  const format = await responseFormat(ctx, body as CompletionsBody & { response_format?: unknown });
  return {
    format,
    kind: 'completion',
    n: body.n ?? 1,
    choice: { ...sampling(body, badWords), inputIds, maxTokens, logprobs: body.logprobs ?? undefined },
    stream: body.stream === true,
    includeUsage: body.stream_options?.include_usage === true,
    continuousUsage: body.stream_options?.continuous_usage_stats === true,
    topLogprobs: body.logprobs ?? undefined,
  };
}

async function planChat(ctx: ServerContext, body: ChatBody): Promise<Plan> {
  ctx.checkModel(body.model, 'openai');
  refuseUnsupported(body as unknown as Record<string, unknown>);
  if (!ctx.chatTemplate) {
    throw new ApiError(
      400,
      `the model ${ctx.modelName} has no chat template (no "chat_template" in its tokenizer_config.json and no chat_template.jinja): use /v1/completions, or add a template to the engine directory`,
      'invalid_request_error', 'messages', 'chat_template_missing',
    );
  }
  if (body.tools != null && !Array.isArray(body.tools)) throw new ApiError(400, 'tools: must be an array', 'invalid_request_error', 'tools');
  const tools = body.tools == null || (body.tools as unknown[]).length === 0 ? undefined : validateTools(body.tools);
  const toolChoice = validateToolChoice(body.tool_choice, tools);
  const mustCall = toolChoice === 'required' || typeof toolChoice === 'object';
  let prompt: string;
  try {
    // Tools reach the model through its template's `tools` variable (not with tool_choice none).
    prompt = ctx.chatTemplate.render(chatMessages(ctx, body), { tools: toolChoice === 'none' ? undefined : tools });
  } catch (error) {
    if (error instanceof ChatTemplateError) throw new ApiError(400, error.message, 'invalid_request_error', 'messages');
    throw error;
  }
  const { inputIds, badWords } = await tokenizeInputs(ctx, { text: prompt, param: 'messages', addSpecialTokens: false }, body, body.max_completion_tokens != null ? 'max_completion_tokens' : 'max_tokens');
  const maxTokens = ctx.checkLengths(inputIds.length, body.max_completion_tokens ?? body.max_tokens ?? undefined, 'messages', body.max_completion_tokens != null ? 'max_completion_tokens' : 'max_tokens');
  if (body.top_logprobs != null && body.logprobs !== true) {
    throw new ApiError(400, 'top_logprobs needs logprobs: true', 'invalid_request_error', 'top_logprobs');
  }
  const topLogprobs = body.logprobs === true ? (body.top_logprobs ?? 0) : undefined;
  const bodyFormat = (body as { response_format?: { type?: unknown } | null }).response_format;
  if (mustCall && bodyFormat != null && bodyFormat.type !== 'text') {
    throw new ApiError(400, 'response_format cannot be combined with a required tool call (tool_choice required or a function)', 'invalid_request_error', 'response_format');
  }
  if (mustCall && body.ignore_eos) throw new ApiError(400, 'ignore_eos cannot be combined with a required tool call: the call ends with the end token', 'invalid_request_error', 'ignore_eos');
  // A required call is forced by a grammar: one call of the tool (or one of the tools), arguments valid.
  const chosen = typeof toolChoice === 'object' ? (tools ?? []).filter((tool) => tool.function.name === toolChoice.function.name) : tools;
  const format = mustCall ? await ctx.llm.compileToolCall(chosen ?? [], { field: 'tools' }) : await responseFormat(ctx, body as ChatBody & { response_format?: unknown });
  return {
    format,
    toolCalls: toolChoice !== 'none',
    forcedToolCall: mustCall,
    kind: 'chat',
    n: body.n ?? 1,
    choice: { ...sampling(body, badWords), inputIds, maxTokens, logprobs: topLogprobs },
    stream: body.stream === true,
    includeUsage: body.stream_options?.include_usage === true,
    continuousUsage: body.stream_options?.continuous_usage_stats === true,
    topLogprobs,
  };
}

/** Formats logprobs the way each endpoint does. */
class LogprobFormatter {
  #textOffset = 0;

  constructor(
    private readonly ctx: ServerContext,
    private readonly kind: Kind,
    private readonly top: number,
  ) {}

  #token(id: number): string {
    return this.ctx.llm.tokenizer.decode([id]);
  }

  format(entries: TokenLogprob[] | undefined): unknown {
    if (!entries) return null;
    if (this.kind === 'chat') {
      const item = (token: number, logprob: number) => {
        const text = this.#token(token);
        return { token: text, logprob, bytes: Array.from(Buffer.from(text, 'utf8')) };
      };
      return {
        content: entries.map((e) => ({ ...item(e.token, e.logprob), top_logprobs: e.top.slice(0, this.top).map((t) => item(t.token, t.logprob)) })),
      };
    }
    const tokens = entries.map((e) => this.#token(e.token));
    const textOffset = tokens.map((t) => {
      const offset = this.#textOffset;
      this.#textOffset += t.length;
      return offset;
    });
    return {
      tokens,
      token_logprobs: entries.map((e) => e.logprob),
      top_logprobs: entries.map((e) => Object.fromEntries(e.top.slice(0, this.top).map((t) => [this.#token(t.token), t.logprob]))),
      text_offset: textOffset,
    };
  }
}

/** OpenAI's finish_reason: "stop" for the end of sequence and for a stop sequence alike, "length", and vLLM's "abort". */
function finishReason(reason: ChoiceFinishReason): string {
  return reason === 'cancelled' ? 'abort' : reason === 'eos' ? 'stop' : reason;
}

function toolCallId(): string {
  return `call_${randomUUID().replace(/-/g, '').slice(0, 24)}`;
}

/**
 * A chat choice that may call tools, streamed as OpenAI's deltas: each call as {index, id, type,
 * function: {name, arguments: ""}} followed by its arguments, and finish_reason "tool_calls"; or the
 * text as content. A call forced by a grammar (`forced`: the output is exactly one call) is sent as it
 * is written: its name once complete, then its arguments in as many deltas as the text came in (their
 * JSON without the whitespace between tokens, as in the non-streamed response). Otherwise the text is
 * held until the end, since it may or may not turn out to hold calls.
 */
async function streamWithTools(
  choice: Choice,
  index: number,
  onDelta: (delta: { numOutputTokens: number }) => void,
  send: (body: object) => void,
  flowControl: () => Promise<void>,
  signal: AbortSignal,
  forced = false,
): Promise<void> {
  let text = '';
  let id: string | undefined;
  let sentArguments = '';
  for await (const delta of choice) {
    onDelta(delta);
    text += delta.text;
    const open = forced ? text.indexOf(TOOL_CALL_OPEN) : -1;
    if (open >= 0 && !(signal.aborted && !abortedByShutdown(signal))) {
      const partial = readPartialCall(text.slice(open + TOOL_CALL_OPEN.length));
      if (id === undefined && partial.name !== undefined) {
        id = toolCallId();
        send({ index, delta: { tool_calls: [{ index: 0, id, type: 'function', function: { name: partial.name, arguments: '' } }] }, logprobs: null, finish_reason: null });
      }
      const compact = id === undefined ? '' : compactJson(partial.arguments);
      if (compact.length > sentArguments.length) {
        send({ index, delta: { tool_calls: [{ index: 0, function: { arguments: compact.slice(sentArguments.length) } }] }, logprobs: null, finish_reason: null });
        sentArguments = compact;
      }
    }
    if (!delta.finishReason) {
      await flowControl();
      continue;
    }
    if (signal.aborted && !abortedByShutdown(signal)) return;
    if (id !== undefined) {
      // Sent as it came: "tool_calls" if it is a whole call (the grammar makes it one unless the
      // output was cut short, by max_tokens say, whose finish reason it then gets).
      const { calls } = parseToolCalls(text, () => id as string);
      const whole = calls.length === 1 && calls[0].function.arguments === sentArguments;
      send({ index, delta: {}, logprobs: null, finish_reason: whole ? 'tool_calls' : finishReason(delta.finishReason) });
      return;
    }
    const { content, calls } = parseToolCalls(text, toolCallId);
    if (calls.length === 0) {
      send({ index, delta: { content: text }, logprobs: null, finish_reason: finishReason(delta.finishReason) });
      return;
    }
    if (content) send({ index, delta: { content }, logprobs: null, finish_reason: null });
    calls.forEach((call: ToolCall, callIndex: number) => {
      send({ index, delta: { tool_calls: [{ index: callIndex, id: call.id, type: 'function', function: { name: call.function.name, arguments: '' } }] }, logprobs: null, finish_reason: null });
      send({ index, delta: { tool_calls: [{ index: callIndex, function: { arguments: call.function.arguments } }] }, logprobs: null, finish_reason: null });
    });
    send({ index, delta: {}, logprobs: null, finish_reason: 'tool_calls' });
  }
}

/** Starts every choice (queued synchronously: a bad request fails before anything is written). */
function startChoices(ctx: ServerContext, plan: Plan, signal: AbortSignal): Choice[] {
  const aborter = new AbortController();
  setMaxListeners(plan.n + 1, aborter.signal);  // one listener per choice, by design
  const onAbort = (): void => aborter.abort(signal.reason);
  signal.addEventListener('abort', onAbort, { once: true });
  const choices: Choice[] = [];
  try {
    for (let index = 0; index < plan.n; index++) {
      const seed = plan.choice.seed === undefined ? undefined : BigInt(plan.choice.seed) + BigInt(index);
      choices.push(startChoice(ctx.llm, ctx.metrics, {
        ...plan.choice,
        seed: index === 0 ? plan.choice.seed : seed,
        signal: aborter.signal,
        tokenMask: plan.format?.maskSource(),
      }));
    }
  } catch (error) {
    aborter.abort();  // the choices already queued
    signal.removeEventListener('abort', onAbort);
    throw error;
  }
  return choices;
}

async function respond(ctx: ServerContext, plan: Plan, request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  try {
    return await respondWith(ctx, plan, request, reply);
  } finally {
    plan.format?.dispose();  // its choices have ended (or never started)
  }
}

async function respondWith(ctx: ServerContext, plan: Plan, request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
  const { signal } = ctx.admit(reply);
  const choices = startChoices(ctx, plan, signal);
  const id = `${plan.kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID().replace(/-/g, '')}`;
  const created = Math.floor(Date.now() / 1000);
  const model = ctx.modelName;
  const promptTokens = plan.choice.inputIds.length;
  const top = plan.topLogprobs ?? 0;

  if (!plan.stream) {
    const results = await Promise.all(choices.map(collectChoice));
    if (abortedByShutdown(signal) || (results.some((r) => r.finishReason === 'cancelled') && !signal.aborted)) {
      throw new ApiError(503, 'the request was cancelled: the server is shutting down', 'server_error', null, 'shutting_down');
    }
    const completionTokens = results.reduce((n, r) => n + r.tokenIds.length, 0);
    const usage = { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
    return {
      id,
      object: plan.kind === 'chat' ? 'chat.completion' : 'text_completion',
      created,
      model,
      choices: results.map((r, index) => {
        const logprobs = plan.topLogprobs === undefined ? null : new LogprobFormatter(ctx, plan.kind, top).format(r.logprobs ?? []);
        if (plan.kind === 'chat' && plan.toolCalls) {
          const { content, calls } = parseToolCalls(r.text, toolCallId);
          if (calls.length > 0) {
            return { index, message: { role: 'assistant', content: content || null, tool_calls: calls }, logprobs, finish_reason: 'tool_calls' };
          }
        }
        return plan.kind === 'chat'
          ? { index, message: { role: 'assistant', content: r.text }, logprobs, finish_reason: finishReason(r.finishReason) }
          : { index, text: r.text, logprobs, finish_reason: finishReason(r.finishReason) };
      }),
      usage,
    };
  }

  const sse = new SseWriter(reply, request, ctx.stalledStreamTimeoutMs);
  const object = plan.kind === 'chat' ? 'chat.completion.chunk' : 'text_completion';
  const outputTokens = new Array<number>(plan.n).fill(0);
  const usageNow = () => {
    const completion = outputTokens.reduce((a, b) => a + b, 0);
    return { prompt_tokens: promptTokens, completion_tokens: completion, total_tokens: promptTokens + completion };
  };
  // A chunk is serialized as JSON.stringify({id, object, created, model, choices: [choice], usage?})
  // would, byte for byte, from a head written once per response: one small stringify per token.
  const head = `${JSON.stringify({ id, object, created, model }).slice(0, -1)},"choices":[`;
  const chunk = (choice: object): string => {
    const usage = plan.continuousUsage ? `,"usage":${JSON.stringify(usageNow())}` : plan.includeUsage ? ',"usage":null' : '';
    return `${head}${JSON.stringify(choice)}]${usage}}`;
  };
  // Backpressure: when the socket's buffer is full, every choice of the response is paused (its KV
  // blocks kept) until the client reads; one that never reads is cut off after the stall timeout.
  const flowControl = async (): Promise<void> => {
    if (!sse.blocked) return;
    for (const choice of choices) choice.setPaused(true);
    const ok = await sse.writable();
    for (const choice of choices) choice.setPaused(false);
    if (!ok && !signal.aborted) request.log.warn('stream: the client read nothing for the stall timeout; its request was cancelled');
  };
  try {
    await Promise.all(
      choices.map(async (choice, index) => {
        const formatter = plan.topLogprobs === undefined ? undefined : new LogprobFormatter(ctx, plan.kind, top);
        if (plan.kind === 'chat') sse.send(chunk({ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }));
        if (plan.kind === 'chat' && plan.toolCalls) {
          await streamWithTools(choice, index, (delta) => {
            outputTokens[index] = delta.numOutputTokens;
          }, (body) => sse.send(chunk(body)), flowControl, signal, plan.forcedToolCall === true);
          return;
        }
        for await (const delta of choice) {
          outputTokens[index] = delta.numOutputTokens;
          // The client is gone: let the choice end (it was cancelled). At shutdown the client is still
          // there: it gets the last chunk, with finish_reason "abort".
          if (signal.aborted && !abortedByShutdown(signal)) continue;
          const logprobs = formatter ? formatter.format(delta.logprobs ?? []) : null;
          const reason = delta.finishReason ? finishReason(delta.finishReason) : null;
          if (plan.kind === 'chat') {
            sse.send(chunk({ index, delta: delta.text || !reason ? { content: delta.text } : {}, logprobs, finish_reason: reason }));
          } else {
            sse.send(chunk({ index, text: delta.text, logprobs, finish_reason: reason }));
          }
          await flowControl();
        }
      }),
    );
    if (abortedByShutdown(signal)) {
      // Truncated: say so in OpenAI's error shape, so a client cannot take the text for a whole answer.
      sse.send(errorBody('openai', new ApiError(503, new ShutdownAbort().message, 'server_error', null, 'shutting_down')));
    } else if (plan.includeUsage) {
      sse.send({ id, object, created, model, choices: [], usage: usageNow() });
    }
  } catch (error) {
    request.log.error({ err: error }, 'generation failed while streaming');
    sse.send(errorBody('openai', toApiError(error, 'openai')));
  }
  sse.send('[DONE]');
  sse.end();
  return reply;
}

export function registerOpenAIRoutes(app: FastifyInstance, ctx: ServerContext): void {
  const card = () => ({
    id: ctx.modelName,
    object: 'model',
    created: 0,
    owned_by: 'kiln',
    max_model_len: ctx.maxSeqLen,
    vocab_size: ctx.llm.engine.vocabSize,
  });
  app.get('/v1/models', async () => ({ object: 'list', data: [card()] }));
  app.get<{ Params: { model: string } }>('/v1/models/:model', async (request) => {
    ctx.checkModel(request.params.model, 'openai');
    return card();
  });
  app.post('/v1/completions', { schema: { body: completionsBody } }, async (request, reply) =>
    respond(ctx, await planCompletion(ctx, request.body as CompletionsBody), request, reply),
  );
  app.post('/v1/chat/completions', { schema: { body: chatCompletionsBody } }, async (request, reply) =>
    respond(ctx, await planChat(ctx, request.body as ChatBody), request, reply),
  );
}
