// Tokenization (and the parsing of large request bodies) off the event loop. Encoding a 1 MB prompt, or a thousand bad words, takes the tokenizer
// seconds of CPU; on the event loop that would freeze every other request, /health included (a client
// could stall the server with one request). Small inputs are encoded inline (a worker round trip would
// cost more than the work); large ones go to one worker thread holding its own copy of the tokenizer,
// built from the same tokenizer.json and tokenizer_config.json, so the ids are the same.
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { LLM } from '@kiln/runtime';
import { MAX_BAD_WORDS, MAX_SEQUENCE_TOKENS, MAX_STOP_TEXT, MAX_STOP_WORDS } from '@kiln/sampling';

/** Inputs up to this many characters in all, and this many texts, are encoded on the calling thread. */
export const INLINE_TOKENIZE_CHARS = 4096;
export const INLINE_TOKENIZE_TEXTS = 8;

/** Bodies from this size on are parsed on the worker (see parseJson). */
export const OFFLOAD_JSON_BYTES = 64 * 1024;

/**
 * The bad words of a body parsed on the worker, checked and tokenized there: their ids (views of one
 * buffer), or the refusal the route gives (a message about `bad_words`). The body's `bad_words` then
 * holds short markers, one per word.
 */
export type WorkerWords = { ids: Int32Array[] } | { error: string };

/** A parsed body; or not JSON; or refused for prototype poisoning (fastify's message); or the worker failed. */
export type JsonResult = { value: unknown; words?: WorkerWords; stopWordsError?: string } | { invalid: true } | { poisoned: string } | { failed: true };

/** A request body streamed to the worker as it arrives (TokenizePool.parseJson). */
export interface JsonUpload {
  /** Sends a chunk (copied into a buffer of its own, transferred). */
  write(chunk: Uint8Array): void;
  /** The body is complete: parses it. */
  end(): Promise<JsonResult>;
  /** Drops what was sent (a body over the limit, an aborted request). */
  discard(): void;
}

export interface TokenizeItem {
  text: string;
  addSpecialTokens: boolean;
}

// Plain JavaScript, evaluated in the worker: the tokenizer package's CommonJS build, given by path.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
// On Linux, setpriority(0) applies to the calling thread only: this worker yields the CPU to the event
// loop (and the executor's threads) when cores are short, as Kiln's compute threads do (decision 0005).
try {
  require('node:os').setPriority(0, 10);
} catch {}
const { Tokenizer } = require(workerData.tokenizersModule);
const readJson = (file) => JSON.parse(fs.readFileSync(file, 'utf8'));
let config = {};
if (fs.existsSync(workerData.configPath)) config = readJson(workerData.configPath);
const tokenizer = new Tokenizer(readJson(workerData.tokenizerPath), config);
// Prompts longer than this many characters cannot fit the context whatever they hold (see
// oversizedMarker): they stay here, and the main thread gets a short marker with their length.
const oversized = workerData.oversized;
const isOversized = (text) => oversized !== undefined && typeof text === 'string' && text.length > oversized.minLength;
const markOversized = (text) => oversized.marker + text.length;
function keepOversizedPrompts(route, body) {
  if (oversized === undefined || typeof body !== 'object' || body === null || Array.isArray(body)) return;
  if (route === '/v1/completions') {
    if (isOversized(body.prompt)) body.prompt = markOversized(body.prompt);
    else if (Array.isArray(body.prompt)) body.prompt = body.prompt.map((part) => (isOversized(part) ? markOversized(part) : part));
  } else if (route === '/v1/chat/completions' && Array.isArray(body.messages)) {
    for (const message of body.messages) {
      if (typeof message !== 'object' || message === null) continue;
      if (isOversized(message.content)) message.content = markOversized(message.content);
      else if (Array.isArray(message.content)) {
        for (const part of message.content) if (typeof part === 'object' && part !== null && isOversized(part.text)) part.text = markOversized(part.text);
      }
    }
  } else if (route.startsWith('/v2/models/') && (route.endsWith('/generate') || route.endsWith('/generate_stream')) && isOversized(body.text_input)) {
    body.text_input = markOversized(body.text_input);
  }
}
// Bad words of a body parsed here are checked and tokenized here too (see TokenizePool.parseJson):
// the main thread gets short markers in their place and the token ids (or the refusal), instead of
// a thousand long strings that it would only encode and send back. The checks and messages are the
// routes' (openai.ts: tokenizeInputs, triton.ts: wordList, context.ts: tokenizeMany, badWordCheck).
const limits = workerData.limits;
function tokenizeWords(route, body) {
  if (typeof body !== 'object' || body === null || Array.isArray(body) || body.bad_words === undefined) return undefined;
  const triton = route.startsWith('/v2/models/') && (route.endsWith('/generate') || route.endsWith('/generate_stream'));
  if (!triton && route !== '/v1/completions' && route !== '/v1/chat/completions') return undefined;
  const given = body.bad_words;
  // Anything the schema refuses (not a list of strings, too many) is left to it.
  if (!(Array.isArray(given) ? given.length <= limits.maxWords && given.every((word) => typeof word === 'string') : triton && typeof given === 'string')) return undefined;
  const words = [];
  let error;
  if (Array.isArray(given)) {
    for (const word of given) {
      if (triton && word.length === 0) continue;
      if (error === undefined && word.length === 0) error = 'bad_words[' + words.length + '] is empty';
      if (error === undefined && word.length > limits.maxText) error = 'bad_words[' + words.length + '] is ' + word.length + ' characters long, more than the ' + limits.maxText + ' allowed';
      words.push(word);
    }
  } else {
    let start = 0;
    while (error === undefined) {
      const at = given.indexOf(',', start);
      const word = given.slice(start, at < 0 ? undefined : at);
      if (word.length > 0) {
        if (words.length === limits.maxWords) error = 'bad_words holds more than ' + limits.maxWords + ' words';
        else if (word.length > limits.maxText) error = 'bad_words[' + words.length + '] is ' + word.length + ' characters long, more than the ' + limits.maxText + ' allowed';
        else words.push(word);
      }
      if (at < 0) break;
      start = at + 1;
    }
  }
  body.bad_words = words.map((_, i) => limits.marker + i);
  if (error !== undefined) {
    if (!Array.isArray(given)) body.bad_words = [];
    return { error };
  }
  const lists = [];
  for (let i = 0; i < words.length; i++) {
    const ids = tokenizer.encode(words[i], { add_special_tokens: false }).ids;
    if (ids.length === 0) return { error: 'bad_words is empty: it must hold at least one token' };
    if (ids.length > limits.maxTokens) return { error: 'bad_words[' + i + '] is ' + ids.length + ' tokens long, more than the ' + limits.maxTokens + ' allowed' };
    lists.push(ids);
  }
  const lengths = Int32Array.from(lists, (ids) => ids.length);
  const flat = new Int32Array(lengths.reduce((n, k) => n + k, 0));
  let at = 0;
  for (const ids of lists) {
    flat.set(ids, at);
    at += ids.length;
  }
  return { flat, lengths };
}
// Request bodies being received: their chunks, by upload id.
const uploads = new Map();
// fastify's own JSON parser (secure-json-parse), which refuses prototype poisoning the same way.
const secureJson = require(workerData.secureJsonParseModule);
// Triton's stop_words as a comma-separated string (a megabyte of it, say): split here with the route's
// limits (triton.ts: wordList). The main thread gets the words as a list (the same words: empty ones
// are skipped in both forms), or the refusal.
function splitStopWords(route, body) {
  const triton = route.startsWith('/v2/models/') && (route.endsWith('/generate') || route.endsWith('/generate_stream'));
  if (!triton || typeof body !== 'object' || body === null || Array.isArray(body) || typeof body.stop_words !== 'string') return undefined;
  const given = body.stop_words;
  const words = [];
  let start = 0;
  for (;;) {
    const at = given.indexOf(',', start);
    const word = given.slice(start, at < 0 ? undefined : at);
    if (word.length > 0) {
      if (words.length === limits.maxStopWords) {
        body.stop_words = [];
        return 'stop_words holds more than ' + limits.maxStopWords + ' words';
      }
      if (word.length > limits.maxText) {
        body.stop_words = [];
        return 'stop_words[' + words.length + '] is ' + word.length + ' characters long, more than the ' + limits.maxText + ' allowed';
      }
      words.push(word);
    }
    if (at < 0) break;
    start = at + 1;
  }
  body.stop_words = words;
  return undefined;
}
parentPort.on('message', ({ id, text: bytes, lengths: textLengths, special, chunk, end, discard, route }) => {
  if (chunk !== undefined) {
    const chunks = uploads.get(id);
    if (chunks) chunks.push(new Uint8Array(chunk));
    else uploads.set(id, [new Uint8Array(chunk)]);
    return;
  }
  if (discard) return void uploads.delete(id);
  if (end) {
    // A request body, received in transferred chunks: decoded and parsed here, sent back as a
    // structured clone (a copy, much cheaper for the event loop than decoding and parsing).
    const chunks = uploads.get(id) ?? [];
    uploads.delete(id);
    const text = new TextDecoder().decode(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks));
    let value;
    try {
      value = secureJson.parse(text, undefined, { protoAction: 'error', constructorAction: 'error' });
    } catch (error) {
      if (error instanceof SyntaxError) return parentPort.postMessage({ id, invalid: true });
      return parentPort.postMessage({ id, poisoned: String((error && error.message) || error) });
    }
    keepOversizedPrompts(route, value);
    const stopWordsError = splitStopWords(route, value);
    let words;
    try {
      words = tokenizeWords(route, value);
    } catch (error) {
      words = { error: 'bad_words: ' + String((error && error.message) || error) };
    }
    if (words === undefined || words.error !== undefined) return parentPort.postMessage({ id, value, words, stopWordsError });
    return parentPort.postMessage({ id, value, words, stopWordsError }, [words.flat.buffer, words.lengths.buffer]);
  }
  try {
    // The texts come as one transferred UTF-8 buffer and their lengths (UTF-16 code units).
    const joined = new TextDecoder().decode(bytes);
    const lists = [];
    let from = 0;
    for (let i = 0; i < textLengths.length; i++) {
      const text = joined.slice(from, from + textLengths[i]);
      from += textLengths[i];
      lists.push(tokenizer.encode(text, { add_special_tokens: special[i] === 1 }).ids);
    }
    // One flat Int32Array, transferred: cloning thousands of arrays would cost the event loop tens of ms.
    const lengths = Int32Array.from(lists, (ids) => ids.length);
    const flat = new Int32Array(lengths.reduce((n, k) => n + k, 0));
    let at = 0;
    for (const ids of lists) {
      flat.set(ids, at);
      at += ids.length;
    }
    parentPort.postMessage({ id, flat, lengths }, [flat.buffer, lengths.buffer]);
  } catch (error) {
    parentPort.postMessage({ id, error: String((error && error.message) || error) });
  }
});
`;

/** The bytes of `view` in an ArrayBuffer of their own, to transfer (a copy when `view` shares one). */
function ownBuffer(view: Uint8Array): ArrayBuffer {
  if (view.byteOffset === 0 && view.buffer.byteLength === view.length && view.buffer instanceof ArrayBuffer) return view.buffer;
  return view.buffer.slice(view.byteOffset, view.byteOffset + view.length) as ArrayBuffer;
}

/** Where @huggingface/tokenizers' CommonJS entry is, as @kiln/runtime (which depends on it) resolves it. */
function tokenizersModulePath(): string {
  const runtimeDir = path.dirname(require.resolve('@kiln/runtime/package.json'));
  return require.resolve('@huggingface/tokenizers', { paths: [runtimeDir] });
}

/** fastify's JSON parser, as fastify (a dependency of @kiln/server) resolves it. */
function secureJsonParseModulePath(): string {
  const fastifyDir = path.dirname(require.resolve('fastify/package.json'));
  return require.resolve('secure-json-parse', { paths: [fastifyDir] });
}

export class TokenizePool {
  readonly #llm: LLM;
  #worker: Worker | undefined;
  #nextId = 1;
  readonly #pending = new Map<number, { resolve: (ids: Int32Array[]) => void; reject: (error: Error) => void }>();
  readonly #parsing = new Map<number, (result: JsonResult) => void>();
  /**
   * Texts longer than `minLength` characters need at least maxSeqLen tokens (a token stands for at
   * most Tokenizer.maxCharactersPerToken characters): no prompt that long can run. When the worker
   * parses a body, such prompts (completions' prompt, chat messages' content, Triton's text_input)
   * stay on the worker: the main thread gets `marker` and the length instead, so that a 1 MB prompt
   * never becomes a string on the event loop's heap (whose garbage collection held /health for tens
   * of milliseconds), and is refused from its length. The marker holds a random nonce.
   */
  readonly oversized: { marker: string; minLength: number } | undefined;

  readonly #wordMarker = `\u0000kiln-bad-word:${randomBytes(16).toString('hex')}:`;

  constructor(llm: LLM) {
    this.#llm = llm;
    const perToken = llm.tokenizer.maxCharactersPerToken;
    this.oversized = perToken === undefined
      ? undefined
      : { marker: `\u0000kiln-oversized-prompt:${randomBytes(16).toString('hex')}:`, minLength: (llm.engine.maxSeqLen - 1) * perToken };
  }

  /** The length of a text the worker kept (see `oversized`), or undefined for any other text. */
  oversizedLength(text: string): number | undefined {
    const marker = this.oversized?.marker;
    if (marker === undefined || !text.startsWith(marker)) return undefined;
    const length = Number(text.slice(marker.length));
    return Number.isSafeInteger(length) ? length : undefined;
  }

  /**
   * Token ids of each item, in order, as Int32Arrays (views of one buffer when they come from the
   * worker: callers check lengths before turning them into arrays, which for a thousand long bad words
   * would cost the event loop tens of milliseconds).
   */
  async encode(items: TokenizeItem[]): Promise<Int32Array[]> {
    const chars = items.reduce((n, item) => n + item.text.length, 0);
    if (chars <= INLINE_TOKENIZE_CHARS && items.length <= INLINE_TOKENIZE_TEXTS) {
      return items.map((item) => Int32Array.from(this.#llm.tokenizer.encode(item.text, { addSpecialTokens: item.addSpecialTokens })));
    }
    const worker = this.#start();
    const id = this.#nextId++;
    // One UTF-8 buffer, transferred: a structured clone of a 1 MB string, or of a thousand strings,
    // costs the event loop several milliseconds; encoding is a native memcpy-like pass. Each text is
    // written into it in place (joining them first would make one more large string to collect).
    let bytes = 0;
    for (const item of items) bytes += Buffer.byteLength(item.text, 'utf8');
    const buffer = Buffer.allocUnsafeSlow(bytes);
    let at = 0;
    for (const item of items) at += buffer.write(item.text, at, 'utf8');
    const text = ownBuffer(buffer);
    const lengths = Int32Array.from(items, (item) => item.text.length);
    const special = Uint8Array.from(items, (item) => (item.addSpecialTokens ? 1 : 0));
    return new Promise<Int32Array[]>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      worker.postMessage({ id, text, lengths, special }, [text, lengths.buffer, special.buffer]);
    });
  }

  /**
   * Starts the worker now (a server does at start-up): its start costs the event loop some
   * milliseconds, which the first large request would otherwise pay in the middle of others.
   */
  start(): void {
    this.#start();
  }

  #start(): Worker {
    if (this.#worker) return this.#worker;
    const engineDir = this.#llm.engine.engineDir;
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: {
        tokenizersModule: tokenizersModulePath(),
        tokenizerPath: path.join(engineDir, 'tokenizer.json'),
        configPath: path.join(engineDir, 'tokenizer_config.json'),
        oversized: this.oversized,
        secureJsonParseModule: secureJsonParseModulePath(),
        limits: { maxWords: MAX_BAD_WORDS, maxStopWords: MAX_STOP_WORDS, maxText: MAX_STOP_TEXT, maxTokens: MAX_SEQUENCE_TOKENS, marker: this.#wordMarker },
      },
    });
    worker.unref();  // an idle worker does not keep the process alive
    worker.on('message', (message: { id: number; flat?: Int32Array; lengths?: Int32Array; error?: string }) => {
      const parse = this.#parsing.get(message.id);
      if (parse) {
        this.#parsing.delete(message.id);
        const { words, stopWordsError } = message as { words?: { flat: Int32Array; lengths: Int32Array } | { error: string }; stopWordsError?: string };
        if (words === undefined || 'error' in words) return parse(message as unknown as JsonResult);
        const ids: Int32Array[] = [];
        let at = 0;
        for (const length of words.lengths) {
          ids.push(words.flat.subarray(at, at + length));
          at += length;
        }
        return parse({ value: (message as unknown as { value: unknown }).value, words: { ids }, stopWordsError });
      }
      const pending = this.#pending.get(message.id);
      if (!pending) return;
      this.#pending.delete(message.id);
      if (message.error !== undefined) return pending.reject(new Error(`tokenizer: ${message.error}`));
      const { flat, lengths } = message as { flat: Int32Array; lengths: Int32Array };
      const ids: Int32Array[] = [];
      let at = 0;
      for (const length of lengths) {
        ids.push(flat.subarray(at, at + length));
        at += length;
      }
      pending.resolve(ids);
    });
    const fail = (error: Error): void => {
      if (this.#worker === worker) this.#worker = undefined;  // the next request starts a new one
      for (const pending of this.#pending.values()) pending.reject(error);
      this.#pending.clear();
      for (const parse of this.#parsing.values()) parse({ failed: true });
      this.#parsing.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`the tokenizer worker exited (code ${code})`)));
    this.#worker = worker;
    return worker;
  }

  /**
   * A JSON request body streamed to the worker as its chunks arrive (each copied into a buffer of its
   * own and transferred), decoded and parsed there by fastify's parser (secure-json-parse: prototype
   * poisoning refused), the oversized prompts of `route` (the request's path) replaced by markers (see
   * `oversized`) and its bad words checked and tokenized (WorkerWords). The value comes back as a
   * structured clone.
   */
  parseJson(route: string): JsonUpload {
    const worker = this.#start();
    const id = this.#nextId++;
    let state: 'open' | 'ended' | 'discarded' = 'open';
    return {
      write: (chunk) => {
        if (state !== 'open') return;
        const copy = chunk.buffer.slice(chunk.byteOffset, chunk.byteOffset + chunk.length) as ArrayBuffer;
        worker.postMessage({ id, chunk: copy }, [copy]);
      },
      end: () => {
        if (state !== 'open') return Promise.resolve({ failed: true });
        state = 'ended';
        return new Promise<JsonResult>((resolve) => {
          if (this.#worker !== worker) return resolve({ failed: true });  // it died meanwhile
          this.#parsing.set(id, resolve);
          worker.postMessage({ id, end: true, route });
        });
      },
      discard: () => {
        if (state !== 'open') return;
        state = 'discarded';
        if (this.#worker === worker) worker.postMessage({ id, discard: true });
      },
    };
  }

  async close(): Promise<void> {
    const worker = this.#worker;
    this.#worker = undefined;
    if (worker) await worker.terminate();
  }
}
