// KServe v2 (Triton's HTTP protocol): health, model metadata and readiness, and Triton's generate
// extension (POST /v2/models/{model}/generate and /generate_stream) with the input and output names of
// TensorRT-LLM's Triton ensemble (tensorrtllm_backend all_models/inflight_batcher_llm/ensemble):
// text_input, max_tokens, bad_words, stop_words, end_id, pad_id, top_k, top_p, temperature,
// length_penalty, repetition_penalty, min_length, presence_penalty, frequency_penalty, random_seed,
// return_log_probs, beam_width, stream, exclude_input_in_output, guided_decoding_guide_type,
// guided_decoding_guide -> text_output, cum_log_probs, output_log_probs, batch_index, sequence_index.
import { ResponseFormatError, type CompiledFormat } from '@kiln/chat';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { MAX_BAD_WORDS, MAX_STOP_TEXT, MAX_STOP_WORDS } from '@kiln/sampling';
import { abortedByShutdown, ShutdownAbort, SseWriter, type ServerContext } from './context';
import { ApiError, errorBody, toApiError } from './errors';
import { collectChoice, startChoice, type ChoiceFinishReason, type ChoiceRequest } from './generation';
import { tritonGenerateBody } from './schemas';

const MODEL_VERSION = '1';

interface GenerateBody {
  text_input: string;
  max_tokens: number;
  bad_words?: string | string[];
  stop_words?: string | string[];
  end_id?: number;
  pad_id?: number;
  top_k?: number;
  top_p?: number;
  temperature?: number;
  length_penalty?: number;
  repetition_penalty?: number;
  min_length?: number;
  min_tokens?: number;
  presence_penalty?: number;
  frequency_penalty?: number;
  random_seed?: number;
  return_log_probs?: boolean;
  return_context_logits?: boolean;
  return_generation_logits?: boolean;
  exclude_input_in_output?: boolean;
  beam_width?: number;
  stream?: boolean;
  guided_decoding_guide_type?: string;
  guided_decoding_guide?: string;
}

/**
 * TensorRT-LLM's guided decoding inputs (GuidedDecodingParams: guide types json, json_schema, regex,
 * ebnf_grammar, structural_tag) compiled into a grammar; undefined without them. Errors name the
 * input at fault (a schema's own path follows, as in guided_decoding_guide.properties.age.multipleOf).
 */
async function guidedDecoding(ctx: ServerContext, body: GenerateBody): Promise<CompiledFormat | undefined> {
  const type = body.guided_decoding_guide_type;
  const guide = body.guided_decoding_guide;
  if (type === undefined || type === '') {
    if (guide !== undefined && guide !== '') throw new ApiError(400, 'guided_decoding_guide needs guided_decoding_guide_type', 'invalid_request_error', 'guided_decoding_guide_type');
    return undefined;
  }
  const needGuide = (): string => {
    if (guide === undefined || guide === '') throw new ApiError(400, `guided_decoding_guide is required with guided_decoding_guide_type ${type}`, 'invalid_request_error', 'guided_decoding_guide');
    return guide;
  };
  let format: unknown;
  switch (type) {
    case 'json':
      if (guide !== undefined && guide !== '') throw new ApiError(400, 'guided_decoding_guide must be empty with guided_decoding_guide_type json (any JSON object)', 'invalid_request_error', 'guided_decoding_guide');
      format = { type: 'json_object' };
      break;
    case 'json_schema': {
      let schema: unknown;
      try {
        schema = JSON.parse(needGuide());
      } catch (error) {
        throw new ApiError(400, `guided_decoding_guide: not JSON: ${(error as Error).message}`, 'invalid_request_error', 'guided_decoding_guide');
      }
      format = { type: 'json_schema', schema };
      break;
    }
    case 'regex':
      format = { type: 'regex', pattern: needGuide() };
      break;
    case 'ebnf_grammar':
      format = { type: 'grammar', grammar: needGuide() };
      break;
    default:
      throw new ApiError(400, `guided_decoding_guide_type ${JSON.stringify(type)} is not supported: json, json_schema, regex or ebnf_grammar`, 'invalid_request_error', 'guided_decoding_guide_type');
  }
  try {
    return await ctx.llm.compileResponseFormat(format, { field: 'guided_decoding_guide', ignoreEos: false, endId: body.end_id });
  } catch (error) {
    if (!(error instanceof ResponseFormatError)) throw error;
    // Our format's own field names (schema, pattern, grammar) are the guide itself here.
    const path = error.path.replace(/^guided_decoding_guide\.(schema|pattern|grammar)/, 'guided_decoding_guide');
    throw new ApiError(400, `${path}: ${error.message.slice(error.path.length + 2)}`, 'invalid_request_error', path);
  }
}

/**
 * bad_words / stop_words: "" is none; a string is a comma-separated list (as the ensemble's preprocessing
 * reads it). The string form gets the same limits as the list form (the schema's maxItems cannot see
 * inside a string): counted before anything is split into more than `max` + 1 pieces or tokenized, so
 * that 100k words in one string cost nothing but the refusal.
 */
function wordList(value: string | string[] | undefined, param: string, max: number): string[] {
  if (value === undefined) return [];
  const words: string[] = [];
  for (const word of typeof value === 'string' ? splitLazily(value) : value) {
    if (word.length === 0) continue;
    if (words.length === max) throw new ApiError(400, `${param} holds more than ${max} words`, 'invalid_request_error', param);
    if (word.length > MAX_STOP_TEXT) {
      throw new ApiError(400, `${param}[${words.length}] is ${word.length} characters long, more than the ${MAX_STOP_TEXT} allowed`, 'invalid_request_error', param);
    }
    words.push(word);
  }
  return words;
}

/** The comma-separated pieces of `text`, one at a time (a refusal after `max` words splits no further). */
function* splitLazily(text: string): Generator<string> {
  let start = 0;
  for (;;) {
    const at = text.indexOf(',', start);
    if (at < 0) {
      yield text.slice(start);
      return;
    }
    yield text.slice(start, at);
    start = at + 1;
  }
}

async function plan(ctx: ServerContext, model: string, body: GenerateBody): Promise<Omit<ChoiceRequest, 'signal'>> {
  ctx.checkModel(model, 'triton');
  if (body.return_context_logits || body.return_generation_logits) {
    throw new ApiError(400, 'return_context_logits and return_generation_logits are not supported over HTTP by this server', 'invalid_request_error', 'return_generation_logits');
  }
  // Counts and lengths first; then one tokenization, off the event loop when it is large.
  ctx.checkStopWordsFromWorker(body);  // the string form of a large body, split on the worker
  const stop = wordList(body.stop_words, 'stop_words', MAX_STOP_WORDS);
  // A large body's bad words were checked and tokenized by the worker that parsed it.
  const fromWorker = ctx.badWordsFromWorker(body);
  const bad = fromWorker === undefined ? wordList(body.bad_words, 'bad_words', MAX_BAD_WORDS) : [];
  const [inputIds, ...tokenized] = await ctx.tokenizeMany([
    { text: body.text_input, param: 'text_input', addSpecialTokens: true, check: ctx.promptCheck('text_input', 'max_tokens'), prompt: true },
    ...bad.map((text, i) => ({ text, param: 'bad_words', addSpecialTokens: false, check: ctx.badWordCheck('bad_words', i) })),
  ]);
  const badWords = fromWorker ?? tokenized;
  const maxTokens = ctx.checkLengths(inputIds.length, body.max_tokens, 'text_input', 'max_tokens');
  return {
    inputIds,
    maxTokens,
    temperature: body.temperature,
    topK: body.top_k,
    // TensorRT-LLM reads top_p 0 as "off".
    topP: body.top_p === 0 ? undefined : body.top_p,
    lengthPenalty: body.length_penalty,
    repetitionPenalty: body.repetition_penalty,
    minTokens: body.min_tokens ?? body.min_length,
    presencePenalty: body.presence_penalty,
    frequencyPenalty: body.frequency_penalty,
    seed: body.random_seed,
    endId: body.end_id,
    beamWidth: body.beam_width,
    badWords,
    stop,
    logprobs: body.return_log_probs ? 0 : undefined,
  };
}

export function registerTritonRoutes(app: FastifyInstance, ctx: ServerContext, version: string): void {
  const ready = () => !ctx.draining;
  app.get('/v2', async () => ({ name: 'kiln', version, extensions: ['generate'] }));
  app.get('/v2/health/live', async (_request, reply) => reply.code(200).send());
  app.get('/v2/health/ready', async (_request, reply) => reply.code(ready() ? 200 : 503).send());
  app.get<{ Params: { model: string } }>('/v2/models/:model', async (request) => {
    ctx.checkModel(request.params.model, 'triton');
    const tensor = (name: string, datatype: string, shape: number[]) => ({ name, datatype, shape });
    return {
      name: ctx.modelName,
      versions: [MODEL_VERSION],
      platform: 'kiln',
      inputs: [tensor('text_input', 'BYTES', [-1]), tensor('max_tokens', 'INT32', [1])],
      outputs: [tensor('text_output', 'BYTES', [-1])],
    };
  });
  app.get<{ Params: { model: string } }>('/v2/models/:model/ready', async (request, reply) => {
    ctx.checkModel(request.params.model, 'triton');
    return reply.code(ready() ? 200 : 503).send();
  });
  for (const version of [':model', ':model/versions/:version']) {
    app.post<{ Params: { model: string }; Body: GenerateBody }>(`/v2/models/${version}/generate`, { schema: { body: tritonGenerateBody } }, (request, reply) =>
      generate(ctx, request, reply, false),
    );
    app.post<{ Params: { model: string }; Body: GenerateBody }>(`/v2/models/${version}/generate_stream`, { schema: { body: tritonGenerateBody } }, (request, reply) =>
      generate(ctx, request, reply, true),
    );
  }
}

/** TensorRT-LLM's executor FinishReason names (END_ID, STOP_WORDS, LENGTH, CANCELLED), lower case, on the last response. */
function tritonFinishReason(reason: ChoiceFinishReason): string {
  return { eos: 'end_id', stop: 'stop_words', length: 'length', cancelled: 'cancelled' }[reason];
}

async function generate(
  ctx: ServerContext,
  request: FastifyRequest<{ Params: { model: string }; Body: GenerateBody }>,
  reply: FastifyReply,
  stream: boolean,
): Promise<unknown> {
  const body = request.body;
  if (!stream && body.stream === true) {
    throw new ApiError(400, 'stream: true needs the generate_stream endpoint', 'invalid_request_error', 'stream');
  }
  const choice = await plan(ctx, request.params.model, body);
  const format = await guidedDecoding(ctx, body);
  try {
    return await respond(ctx, request, reply, stream, { ...choice, tokenMask: format?.maskSource() });
  } finally {
    format?.dispose();
  }
}

async function respond(
  ctx: ServerContext,
  request: FastifyRequest<{ Params: { model: string }; Body: GenerateBody }>,
  reply: FastifyReply,
  stream: boolean,
  choice: Omit<ChoiceRequest, 'signal'>,
): Promise<unknown> {
  const body = request.body;
  const { signal } = ctx.admit(reply);
  const deltas = startChoice(ctx.llm, ctx.metrics, { ...choice, signal });
  const prefix = body.exclude_input_in_output === false ? body.text_input : '';
  const base = { model_name: ctx.modelName, model_version: MODEL_VERSION, batch_index: 0, sequence_index: 0 };
  const withLogprobs = body.return_log_probs === true;

  if (!stream) {
    const result = await collectChoice(deltas);
    if (abortedByShutdown(signal) || (result.finishReason === 'cancelled' && !signal.aborted)) throw new ApiError(503, 'the request was cancelled: the server is shutting down');
    const outputLogprobs = (result.logprobs ?? []).map((e) => e.logprob);
    return {
      ...base,
      text_output: prefix + result.text,
      finish_reason: tritonFinishReason(result.finishReason),
      ...(withLogprobs ? { cum_log_probs: outputLogprobs.reduce((a, b) => a + b, 0), output_log_probs: outputLogprobs } : {}),
    };
  }

  const sse = new SseWriter(reply, request, ctx.stalledStreamTimeoutMs);
  let cumulative = 0;
  let first = true;
  try {
    for await (const delta of deltas) {
      if (signal.aborted && !abortedByShutdown(signal)) continue;
      const outputLogprobs = (delta.logprobs ?? []).map((e) => e.logprob);
      cumulative += outputLogprobs.reduce((a, b) => a + b, 0);
      // Streamed responses carry the new text only (TensorRT-LLM's streaming mode); the prompt, when
      // asked for, comes with the first.
      sse.send({
        ...base,
        text_output: (first ? prefix : '') + delta.text,
        ...(withLogprobs ? { cum_log_probs: cumulative, output_log_probs: outputLogprobs } : {}),
        ...(delta.finishReason ? { finish_reason: tritonFinishReason(delta.finishReason) } : {}),
      });
      first = false;
      // Backpressure: pause the request (its KV blocks kept) until the client reads (see SseWriter).
      if (sse.blocked) {
        deltas.setPaused(true);
        await sse.writable();
        deltas.setPaused(false);
      }
    }
    // Truncated by the shutdown: an error event in Triton's shape ends the stream.
    if (abortedByShutdown(signal)) sse.send({ error: new ShutdownAbort().message });
  } catch (error) {
    request.log.error({ err: error }, 'generation failed while streaming');
    sse.send(errorBody('triton', toApiError(error, 'triton')));
  }
  sse.end();
  return reply;
}
