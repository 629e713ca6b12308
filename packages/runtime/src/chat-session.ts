// A conversation with a model: the history, rendered with the model's chat template (@kiln/chat) before
// each answer, which streams. node-llama-cpp's LlamaChatSession is the model of the API.
import { loadChatTemplate, loadChatTemplateFile, type ChatMessage, type ChatTemplate } from '@kiln/chat';
import type { LLM, LLMGenerateOptions, LLMGenerateResult } from './llm';

export interface ChatSessionOptions {
  /** A Jinja chat template file to use instead of the model's own. Default: the model's (tokenizer_config.json or chat_template.jinja). */
  chatTemplateFile?: string;
  /** The system message that starts every conversation (kept across `reset()`). Default: none. */
  systemPrompt?: string;
}

/** What `prompt` takes: LLM.generate's options, with maxTokens defaulting to 256. */
export type ChatPromptOptions = Omit<LLMGenerateOptions, 'maxTokens'> & {
  /** Tokens of the answer at most. Default 256. */
  maxTokens?: number;
};

export class ChatSession {
  readonly llm: LLM;
  readonly #template: ChatTemplate;
  readonly #systemPrompt: string | undefined;
  #messages: ChatMessage[] = [];

  private constructor(llm: LLM, template: ChatTemplate, systemPrompt: string | undefined) {
    this.llm = llm;
    this.#template = template;
    this.#systemPrompt = systemPrompt;
    this.reset();
  }

  /** A session over `llm` (which it does not own). Throws when the model has no chat template and none is given. */
  static async create(llm: LLM, options: ChatSessionOptions = {}): Promise<ChatSession> {
    const engineDir = llm.engine.engineDir;
    const template = options.chatTemplateFile
      ? await loadChatTemplateFile(options.chatTemplateFile, engineDir)
      : await loadChatTemplate(engineDir);
    if (!template) {
      throw new Error(
        `the model in ${engineDir} has no chat template (no "chat_template" in its tokenizer_config.json and no chat_template.jinja): give one with chatTemplateFile`,
      );
    }
    return new ChatSession(llm, template, options.systemPrompt);
  }

  /** The conversation so far (the system prompt first, when there is one). */
  get messages(): readonly ChatMessage[] {
    return this.#messages;
  }

  /** Forgets the conversation (the system prompt stays). */
  reset(): void {
    this.#messages = this.#systemPrompt === undefined ? [] : [{ role: 'system', content: this.#systemPrompt }];
  }

  /**
   * Adds `text` as the user's message and generates the answer (streamed through `options.onText`),
   * which joins the history, unless the request was cancelled before any text.
   */
  async prompt(text: string, options: ChatPromptOptions = {}): Promise<LLMGenerateResult> {
    const messages = [...this.#messages, { role: 'user', content: text }];
    const rendered = this.#template.render(messages);
    // The template already wrote the special tokens it wants (a bos token among them).
    const inputIds = this.llm.tokenizer.encode(rendered, { addSpecialTokens: false });
    const result = await this.llm.generate(inputIds, { ...options, maxTokens: options.maxTokens ?? 256 });
    if (result.finishReason !== 'cancelled' || result.text.length > 0) {
      this.#messages = [...messages, { role: 'assistant', content: result.text.trim() }];
    }
    return result;
  }
}
