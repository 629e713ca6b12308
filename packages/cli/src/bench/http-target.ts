// A running server as a BenchTarget: streaming /v1/completions over HTTP (prompts sent as token ids,
// end-of-sequence ignored), tokens counted from the cumulative usage Kiln (and vLLM) put in every chunk
// with stream_options.continuous_usage_stats; a server without it is counted one token per text chunk.
import * as http from 'node:http';
import * as https from 'node:https';
import { prometheusValue, type BenchMemory } from './memory';
import type { BenchRequest, BenchResponse, BenchTarget } from './target';

/** How often watchMemory() scrapes the server's /metrics during a run. */
export const METRICS_SAMPLE_MS = 250;

export interface HttpTargetOptions {
  /** The server's base URL, e.g. http://127.0.0.1:8000 (a trailing /v1 is accepted). */
  url: string;
  apiKey?: string;
  /** The model to ask for. Default: the first of GET /v1/models. */
  model?: string;
}

interface ModelCard {
  id: string;
  max_model_len?: number;
  vocab_size?: number;
}

export class HttpTarget implements BenchTarget {
  readonly description: string;
  readonly vocabSize: number;
  /** The served model's context length, when the server reports it. */
  readonly maxModelLen: number | undefined;
  readonly #base: string;
  readonly #headers: Record<string, string>;
  readonly #model: string;
  /** Keep-alive connections, as many as the concurrency asks for (each streams one request at a time). */
  readonly #agent: http.Agent;
  readonly #request: typeof http.request;

  private constructor(base: string, headers: Record<string, string>, card: ModelCard) {
    this.#base = base;
    const secure = base.startsWith('https:');
    this.#agent = secure ? new https.Agent({ keepAlive: true }) : new http.Agent({ keepAlive: true });
    this.#request = secure ? https.request : http.request;
    this.#headers = headers;
    this.#model = card.id;
    this.description = `${base} (${card.id})`;
    this.vocabSize = card.vocab_size as number;
    this.maxModelLen = card.max_model_len;
  }

  /** Asks the server for its model (and its vocabulary size, which the random prompts need). */
  static async connect(options: HttpTargetOptions): Promise<HttpTarget> {
    const base = options.url.replace(/\/+$/, '').replace(/\/v1$/, '');
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (options.apiKey) headers.authorization = `Bearer ${options.apiKey}`;
    let response: Response;
    try {
      response = await fetch(`${base}/v1/models`, { headers });
    } catch (error) {
      throw new Error(`cannot reach ${base}: ${(error as Error).cause ?? (error as Error).message}`);
    }
    if (!response.ok) throw new Error(`GET ${base}/v1/models answered ${response.status}: ${(await response.text()).slice(0, 300)}`);
    const models = ((await response.json()) as { data?: ModelCard[] }).data ?? [];
    const card = options.model === undefined ? models[0] : models.find((m) => m.id === options.model);
    if (!card) throw new Error(`${base} does not serve ${options.model === undefined ? 'any model' : `model ${options.model}`}`);
    if (!Number.isSafeInteger(card.vocab_size) || (card.vocab_size as number) < 1) {
      throw new Error(`${base}/v1/models does not report the vocab_size of ${card.id}, which random prompts of token ids need`);
    }
    return new HttpTarget(base, headers, card);
  }

  async send(request: BenchRequest, onTokens: (count: number) => void): Promise<BenchResponse> {
    const body = JSON.stringify({
      model: this.#model,
      prompt: request.inputIds,
      max_tokens: request.maxTokens,
      temperature: 0,
      ignore_eos: true,
      stream: true,
      stream_options: { include_usage: true, continuous_usage_stats: true },
    });
    // node:http rather than fetch: at 64 streams and ~25,000 tokens/s the client parses one event per
    // token, and fetch's web stream (a promise and a Uint8Array view per chunk, then TextDecoder) cost
    // this process about twice the main-thread time per token. The measurement must not be the bottleneck.
    const response = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = this.#request(`${this.#base}/v1/completions`, {
        method: 'POST',
        agent: this.#agent,
        headers: { ...this.#headers, 'content-length': Buffer.byteLength(body) },
      }, resolve);
      req.on('error', reject);
      req.end(body);
    });
    response.setEncoding('utf8');  // a character split across two packets is joined by the decoder
    if (response.statusCode !== 200) {
      let text = '';
      for await (const part of response) if (text.length < 300) text += part;
      throw new Error(`POST /v1/completions answered ${response.statusCode}: ${text.slice(0, 300)}`);
    }
    let buffer = '';
    let received = 0;
    let finishReason = '';
    const onData = (data: string): void => {
      if (data === '[DONE]') return;
      const chunk = JSON.parse(data) as {
        error?: { message?: string };
        usage?: { completion_tokens?: number } | null;
        choices?: { text?: string; finish_reason?: string | null }[];
      };
      if (chunk.error) throw new Error(`the server failed the request: ${chunk.error.message}`);
      const choice = chunk.choices?.[0];
      if (choice?.finish_reason) finishReason = choice.finish_reason;
      const total = chunk.usage?.completion_tokens ?? (choice?.text ? received + 1 : received);
      if (total > received) {
        onTokens(total - received);
        received = total;
      }
    };
    // Events end with a blank line; each of their lines that starts with "data: " is handed on. Scanned
    // with indexOf over the buffer, which is cut once per packet rather than once per event.
    const onPacket = (text: string): void => {
      buffer = buffer.length === 0 ? text : buffer + text;
      let from = 0;
      let end: number;
      while ((end = buffer.indexOf('\n\n', from)) >= 0) {
        let line = from;
        while (line < end) {
          let lineEnd = buffer.indexOf('\n', line);
          if (lineEnd < 0 || lineEnd > end) lineEnd = end;
          if (buffer.startsWith('data: ', line)) onData(buffer.slice(line + 6, lineEnd));
          line = lineEnd + 1;
        }
        from = end + 2;
      }
      if (from > 0) buffer = buffer.slice(from);
    };
    await new Promise<void>((resolve, reject) => {
      response.on('data', (text: string) => {
        try {
          onPacket(text);
        } catch (error) {
          response.destroy();
          reject(error);
        }
      });
      response.on('end', resolve);
      response.on('error', reject);
      // The connection closed before the response's end (the server died, or a stall cut it off).
      response.on('close', () => {
        if (!response.complete) reject(new Error('the server closed the connection before the end of the stream'));
      });
    });
    return { outputTokens: received, finishReason };
  }

  /**
   * Over HTTP only what the server's Prometheus /metrics tells: kiln_kv_blocks_used (sampled every
   * METRICS_SAMPLE_MS, so the peak is that of the samples) and kiln_kv_blocks_total; the weights' and the
   * KV cache's bytes are not served (null).
   */
  watchMemory(): () => Promise<BenchMemory> {
    let peak: number | null = null;
    let total: number | null = null;
    let samples = 0;
    let failure: string | undefined;
    let pending: Promise<void> | undefined;
    const scrape = async (): Promise<void> => {
      try {
        const response = await fetch(`${this.#base}/metrics`, { headers: this.#headers });
        const text = await response.text();
        if (!response.ok) throw new Error(`GET /metrics answered ${response.status}`);
        const used = prometheusValue(text, 'kiln_kv_blocks_used');
        if (used === undefined) throw new Error('the server\'s /metrics has no kiln_kv_blocks_used');
        samples++;
        peak = Math.max(peak ?? 0, used);
        total = prometheusValue(text, 'kiln_kv_blocks_total') ?? total;
      } catch (error) {
        failure = (error as Error).message;
      }
    };
    const sample = (): void => {
      if (!pending && failure === undefined) pending = scrape().finally(() => (pending = undefined));
    };
    sample();
    const timer = setInterval(sample, METRICS_SAMPLE_MS);
    return async () => {
      clearInterval(timer);
      await pending;
      const known = failure === undefined && samples > 0;
      return {
        device: null,
        weightBytes: null,
        kvCacheBytes: null,
        kvBlocksTotal: known ? total : null,
        kvBlockTokens: null,
        peakKvBlocksUsed: known ? peak : null,
        peakSource: known ? `the server's /metrics, sampled every ${METRICS_SAMPLE_MS} ms (${samples} samples)` : `over HTTP: ${failure ?? 'no sample of /metrics'}`,
      };
    };
  }

  async close(): Promise<void> {
    this.#agent.destroy();
  }
}
