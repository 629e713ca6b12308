import { Engine, type EngineGenerateOptions, type EngineGenerateResult, type EngineLoadOptions } from './engine';
import { Tokenizer } from './tokenizer';

export interface LLMGenerateOptions extends Omit<EngineGenerateOptions, 'onToken'> {
  /**
   * Called with each piece of generated text as soon as it is complete (never half a character), in
   * order; the pieces concatenate to `text`. Default: none.
   */
  onText?: (delta: string) => void;
  /** Called with each generated token id, in order. Default: none. */
  onToken?: (tokenId: number) => void;
}

export interface LLMGenerateResult extends EngineGenerateResult {
  /** The generated text (special tokens such as the end token left out); the prompt is not repeated. */
  text: string;
}

/** An engine with its tokenizer: text in, text out. */
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

  /** Generates a continuation of `prompt` (text, or token ids used as they are). */
  async generate(prompt: string | readonly number[], options: LLMGenerateOptions): Promise<LLMGenerateResult> {
    const inputIds = typeof prompt === 'string' ? this.tokenizer.encode(prompt) : prompt;
    const { onText, onToken, ...engineOptions } = options;
    const stream = onText ? this.tokenizer.createStreamDecoder({ skipSpecialTokens: true }) : undefined;
    const result = await this.engine.generate(inputIds, {
      ...engineOptions,
      onToken:
        onToken || stream
          ? (tokenId) => {
              onToken?.(tokenId);
              const delta = stream?.push(tokenId);
              if (delta) onText?.(delta);
            }
          : undefined,
    });
    const rest = stream?.flush();
    if (rest) onText?.(rest);
    return { ...result, text: this.tokenizer.decode(result.outputIds, { skipSpecialTokens: true }) };
  }

  dispose(): void {
    this.engine.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose();
  }
}
