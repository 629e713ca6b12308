import * as path from 'node:path';
import { Engine, type EngineGenerateOptions, type EngineGenerateResult, type EngineLoadOptions } from './engine';
import type { ExecutorFinishReason, RequestStats } from './executor';
import { Tokenizer } from './tokenizer';

export interface LLMGenerateOptions extends Omit<EngineGenerateOptions, 'onToken'> {
  /**
   * Called with each piece of generated text as soon as it is complete (never half a character), in
   * order; the pieces concatenate to `text`. Default: none.
   */
  onText?: (delta: string) => void;
  /** Called with each generated token id, in order. Default: none. */
  onToken?: (tokenId: number) => void;
  /** Aborting cancels the request; `generate` then resolves with finish reason "cancelled". Default: none. */
  signal?: AbortSignal;
}

export interface LLMGenerateResult extends Omit<EngineGenerateResult, 'finishReason'> {
  finishReason: ExecutorFinishReason;
  /** The generated text (special tokens such as the end token left out); the prompt is not repeated. */
  text: string;
  /** Queue time, time to first token, time per output token, reused prefix blocks. */
  stats: RequestStats;
}

export type LLMStreamOptions = Omit<LLMGenerateOptions, 'onText' | 'onToken'>;

/** One step of a generation stream: the tokens of one executor iteration and their text. */
export interface LLMStreamChunk {
  tokenIds: number[];
  /** Text completed by these tokens (may be empty while a character is incomplete). */
  text: string;
  /** Set on the last chunk. */
  finishReason?: ExecutorFinishReason;
  /** Set on the last chunk. */
  stats?: RequestStats;
  contextLogits?: Float32Array;
  generationLogits?: Float32Array;
}

/** An engine with its tokenizer: text in, text out. Requests run on the engine's executor, batched. */
export class LLM {
  readonly engine: Engine;
  readonly tokenizer: Tokenizer;

  private constructor(engine: Engine, tokenizer: Tokenizer) {
    this.engine = engine;
    this.tokenizer = tokenizer;
  }

  /** Loads an engine directory and the tokenizer files the builder copied into it. */
  static async load(engineDir: string, options: EngineLoadOptions = {}): Promise<LLM> {
    // The tokenizer first: it is cheap and fails without leaving native memory behind.
    const tokenizer = await Tokenizer.load(engineDir);
    const engine = await Engine.load(engineDir, options);
    return new LLM(engine, tokenizer);
  }

  /**
   * Streams a continuation of `prompt` (text, or token ids used as they are): one chunk per executor
   * iteration that produced tokens for it. Leaving the loop early, or aborting `signal`, cancels it.
   */
  async *generateStream(prompt: string | readonly number[], options: LLMStreamOptions): AsyncGenerator<LLMStreamChunk, void, undefined> {
    const inputIds = typeof prompt === 'string' ? this.tokenizer.encode(prompt) : prompt;
    const { signal, ...request } = options;
    if (request.returnContextLogits && !this.engine.gathersContextLogits) {
      throw new Error(
        `returnContextLogits needs an engine built with gatherContextLogits, and ${path.join(this.engine.engineDir, 'config.json')} ` +
          'says buildConfig.gatherContextLogits is not true: rebuild it with `kiln build --gather-context-logits`',
      );
    }
    const decoder = this.tokenizer.createStreamDecoder({ skipSpecialTokens: true });
    for await (const event of this.engine.executor.stream({ ...request, inputIds }, { signal })) {
      let text = '';
      for (const id of event.outputIds) text += decoder.push(id) ?? '';
      if (event.finishReason !== undefined) text += decoder.flush() ?? '';
      yield {
        tokenIds: event.outputIds,
        text,
        finishReason: event.finishReason,
        stats: event.stats,
        contextLogits: event.contextLogits,
        generationLogits: event.generationLogits,
      };
    }
  }

  /** Generates a continuation of `prompt` (text, or token ids used as they are). */
  async generate(prompt: string | readonly number[], options: LLMGenerateOptions): Promise<LLMGenerateResult> {
    const { onText, onToken, ...streamOptions } = options;
    const outputIds: number[] = [];
    const generationLogits: Float32Array[] = [];
    let contextLogits: Float32Array | undefined;
    let callbackError: unknown;
    for await (const chunk of this.generateStream(prompt, streamOptions)) {
      outputIds.push(...chunk.tokenIds);
      if (chunk.contextLogits) contextLogits = chunk.contextLogits;
      if (chunk.generationLogits) generationLogits.push(chunk.generationLogits);
      // Callbacks that throw do not stop the generation: the first error is reported at the end.
      if (callbackError === undefined) {
        try {
          for (const id of chunk.tokenIds) onToken?.(id);
          if (chunk.text) onText?.(chunk.text);
        } catch (error) {
          callbackError = error ?? new Error('a callback threw');
        }
      }
      if (chunk.finishReason !== undefined) {
        if (callbackError !== undefined) throw callbackError;
        return {
          outputIds,
          finishReason: chunk.finishReason,
          contextLogits: options.returnContextLogits ? (contextLogits ?? new Float32Array(0)) : undefined,
          generationLogits: options.returnGenerationLogits ? concat(generationLogits) : undefined,
          vocabSize: this.engine.vocabSize,
          text: this.tokenizer.decode(outputIds, { skipSpecialTokens: true }),
          stats: chunk.stats as RequestStats,
        };
      }
    }
    throw new Error('the generation ended without a finish reason');
  }

  dispose(): void {
    this.engine.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose();
  }
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, part) => n + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
