// Errors in each protocol's own shape. The OpenAI routes answer `{"error": {"message", "type", "param",
// "code"}}` (as api.openai.com and vLLM do); the KServe v2 / Triton routes answer `{"error": "message"}`
// (as Triton's HTTP endpoint does). Every error a client can cause is an ApiError with a 4xx status.
import { ResponseFormatError } from '@kiln/chat';
import { SamplingConfigError } from '@kiln/sampling';

export type Protocol = 'openai' | 'triton';

export class ApiError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
    /** OpenAI's `type`: invalid_request_error, authentication_error, not_found_error, server_error... */
    readonly type: string = 'invalid_request_error',
    /** The request field at fault, as the protocol spells it. */
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** Which protocol a URL belongs to, for the shape of its errors. */
export function protocolOf(url: string): Protocol {
  return url.startsWith('/v2') ? 'triton' : 'openai';
}

export function errorBody(protocol: Protocol, error: ApiError): object {
  if (protocol === 'triton') return { error: error.message };
  return { error: { message: error.message, type: error.type, param: error.param, code: error.code } };
}

/** SamplingConfig option names as each protocol spells them (for `param` and messages). */
const OPENAI_NAMES: Record<string, string> = {
  temperature: 'temperature', topK: 'top_k', topP: 'top_p', minP: 'min_p', repetitionPenalty: 'repetition_penalty',
  presencePenalty: 'presence_penalty', frequencyPenalty: 'frequency_penalty', seed: 'seed', minTokens: 'min_tokens',
  endId: 'end_id', ignoreEos: 'ignore_eos', stopWords: 'stop', badWords: 'bad_words', embeddingBias: 'logit_bias',
  beamWidth: 'beam_width', numReturnSequences: 'n', logprobs: 'logprobs', maxTokens: 'max_tokens', lengthPenalty: 'length_penalty',
};
const TRITON_NAMES: Record<string, string> = {
  ...OPENAI_NAMES, seed: 'random_seed', stopWords: 'stop_words', embeddingBias: 'embedding_bias_weights',
};

/**
 * Turns whatever a route threw into an ApiError: fastify's own client errors (validation, malformed
 * JSON, body too large, wrong content type) and the runtime's SamplingConfigError keep their 4xx;
 * anything else is a 500 whose message does not leak internals beyond the error's own message.
 */
export function toApiError(error: unknown, protocol: Protocol): ApiError {
  if (error instanceof ApiError) return error;
  if (error instanceof ResponseFormatError) {
    // The path names the field in the request body (response_format.json_schema.schema.properties.x.y).
    return new ApiError(400, error.message, 'invalid_request_error', error.path);
  }
  if (error instanceof SamplingConfigError) {
    const names = protocol === 'triton' ? TRITON_NAMES : OPENAI_NAMES;
    const param = names[error.option] ?? error.option;
    return new ApiError(400, `${param}: ${error.message}`, 'invalid_request_error', param);
  }
  const e = error as { statusCode?: number; code?: string; message?: string; validation?: { instancePath?: string; params?: Record<string, unknown> }[] };
  if (e && Array.isArray(e.validation)) {
    const first = e.validation[0];
    const missing = first?.params?.missingProperty;
    const param = (first?.instancePath ?? '').replace(/^\//, '').split('/')[0] || (typeof missing === 'string' ? missing : null);
    return new ApiError(400, e.message ?? 'invalid request body', 'invalid_request_error', param || null, 'invalid_value');
  }
  if (e && typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    const code = e.code === 'FST_ERR_CTP_BODY_TOO_LARGE' ? 'request_too_large' : e.code === 'FST_ERR_CTP_INVALID_JSON_BODY' ? 'invalid_json' : (e.code ?? null);
    return new ApiError(e.statusCode, e.message ?? 'bad request', 'invalid_request_error', null, code);
  }
  return new ApiError(500, `internal error: ${e?.message ?? String(error)}`, 'server_error');
}
