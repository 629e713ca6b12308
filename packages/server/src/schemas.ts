// JSON schemas of every request body, checked by fastify's built-in ajv (configured in server.ts not to
// coerce types: `"max_tokens": "5"` is a 400, not 5). Unknown fields are allowed and ignored, as the
// OpenAI API and vLLM do, so newer clients keep working (fields Kiln knows it does not implement, such as
// best_of, are refused by name in the routes).
//
// The ranges and list limits come from @kiln/sampling, the runtime's own validation: whatever passes
// here either runs or is a 400 from that validation, never a 500 (test/schema-ranges.test.ts sends values
// from every range). Numbers are bounded to float32's range because the sampler computes in float32
// (1e308 would become Infinity there). Strings and lists are bounded so that the work a request causes
// before it is refused (tokenizing bad words, matching stop strings) stays small.
import { MAX_BAD_WORDS, MAX_FLOAT32, MAX_STOP_TEXT, MAX_STOP_WORDS } from '@kiln/sampling';

const number = { type: 'number', minimum: -MAX_FLOAT32, maximum: MAX_FLOAT32 } as const;
const nullable = (type: string | string[]) => ({ type: [...(Array.isArray(type) ? type : [type]), 'null'] });

/** Sampling fields common to /v1/completions and /v1/chat/completions, and vLLM's extensions. */
const openAISampling = {
  model: { type: 'string' },
  max_tokens: { ...nullable('integer'), minimum: 1 },
  n: { ...nullable('integer'), minimum: 1, maximum: 16 },
  temperature: { ...nullable('number'), minimum: 0, maximum: MAX_FLOAT32 },
  top_p: { ...nullable('number'), exclusiveMinimum: 0, maximum: 1 },
  stop: { ...nullable(['string', 'array']), minLength: 1, maxLength: MAX_STOP_TEXT, maxItems: 16, items: { type: 'string', minLength: 1, maxLength: MAX_STOP_TEXT } },
  seed: { ...nullable('integer'), minimum: 0 },
  presence_penalty: { ...nullable('number'), minimum: -2, maximum: 2 },
  frequency_penalty: { ...nullable('number'), minimum: -2, maximum: 2 },
  logit_bias: { ...nullable('object'), additionalProperties: number, propertyNames: { pattern: '^[0-9]+$', maxLength: 10 } },
  stream: nullable('boolean'),
  stream_options: {
    ...nullable('object'),
    properties: { include_usage: { type: 'boolean' }, continuous_usage_stats: { type: 'boolean' } },
  },
  user: { type: 'string' },
  // Extensions, as vLLM spells them.
  top_k: { type: 'integer', minimum: -1 },
  min_p: { type: 'number', minimum: 0, maximum: 1 },
  repetition_penalty: { type: 'number', exclusiveMinimum: 0, maximum: MAX_FLOAT32 },
  beam_width: { type: 'integer', minimum: 1 },
  length_penalty: number,
  ignore_eos: { type: 'boolean' },
  min_tokens: { type: 'integer', minimum: 0 },
  // Each word's length (≤ MAX_STOP_TEXT, and not empty) is checked in the route: ajv's maxLength and
  // minLength count code points one by one, milliseconds of event loop for a thousand long words.
  bad_words: { type: 'array', maxItems: MAX_BAD_WORDS, items: { type: 'string' } },
  stop_token_ids: { type: 'array', maxItems: MAX_STOP_WORDS, items: { type: 'integer', minimum: 0 } },
} as const;

export const completionsBody = {
  type: 'object',
  required: ['model', 'prompt'],
  properties: {
    ...openAISampling,
    // A string, a list of token ids, or a list of one string (the batch form with one prompt).
    prompt: { type: ['string', 'array'], minItems: 1, items: { type: ['integer', 'string'] } },
    logprobs: { ...nullable('integer'), minimum: 0, maximum: 20 },
    echo: nullable('boolean'),
    suffix: nullable('string'),
    best_of: { ...nullable('integer'), minimum: 1 },
  },
} as const;

export const chatCompletionsBody = {
  type: 'object',
  required: ['model', 'messages'],
  properties: {
    ...openAISampling,
    messages: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['role'],
        properties: {
          role: { type: 'string', enum: ['system', 'developer', 'user', 'assistant', 'tool'] },
          content: {
            ...nullable(['string', 'array']),
            items: { type: 'object', required: ['type'], properties: { type: { type: 'string' }, text: { type: 'string' } } },
          },
          name: { type: 'string' },
        },
      },
    },
    max_completion_tokens: { ...nullable('integer'), minimum: 1 },
    logprobs: nullable('boolean'),
    top_logprobs: { ...nullable('integer'), minimum: 0, maximum: 20 },
  },
} as const;

/** Triton's generate extension with TensorRT-LLM's ensemble inputs (all_models/inflight_batcher_llm/ensemble). */
export const tritonGenerateBody = {
  type: 'object',
  required: ['text_input', 'max_tokens'],
  properties: {
    text_input: { type: 'string' },
    max_tokens: { type: 'integer', minimum: 1 },
    // "" or a comma-separated list, or a list of strings (as the ensemble's preprocessing model reads them).
    // The string form's word count and lengths are checked in the route (triton.ts), before tokenizing.
    bad_words: { type: ['string', 'array'], maxItems: MAX_BAD_WORDS, items: { type: 'string' } },
    stop_words: { type: ['string', 'array'], maxItems: MAX_STOP_WORDS, items: { type: 'string', maxLength: MAX_STOP_TEXT } },
    end_id: { type: 'integer', minimum: 0 },
    pad_id: { type: 'integer', minimum: 0 },
    top_k: { type: 'integer', minimum: 0 },
    top_p: { type: 'number', minimum: 0, maximum: 1 },
    temperature: { type: 'number', minimum: 0 },
    length_penalty: number,
    repetition_penalty: { type: 'number', exclusiveMinimum: 0, maximum: MAX_FLOAT32 },
    min_length: { type: 'integer', minimum: 0 },
    min_tokens: { type: 'integer', minimum: 0 },
    presence_penalty: number,
    frequency_penalty: number,
    random_seed: { type: 'integer', minimum: 0 },
    return_log_probs: { type: 'boolean' },
    return_context_logits: { type: 'boolean' },
    return_generation_logits: { type: 'boolean' },
    exclude_input_in_output: { type: 'boolean' },
    beam_width: { type: 'integer', minimum: 1 },
    stream: { type: 'boolean' },
    // TensorRT-LLM's guided decoding; the guide's size is bounded again by @kiln/chat.
    guided_decoding_guide_type: { type: 'string', maxLength: 32 },
    guided_decoding_guide: { type: 'string', maxLength: 512 * 1024 },
  },
} as const;
