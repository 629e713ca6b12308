// A conversation with a model: the history, rendered with the model's chat template (@kiln/chat) before
// each answer, which streams. node-llama-cpp's LlamaChatSession is the model of the API.
import { randomUUID } from 'node:crypto';
import {
  loadChatTemplate,
  loadChatTemplateFile,
  parseToolCalls,
  validateTools,
  type ChatMessage,
  type ChatTemplate,
  type ToolCall,
  type ToolDefinition,
} from '@kiln/chat';
import type { LLM, LLMGenerateOptions, LLMGenerateResult } from './llm';

export interface ChatSessionOptions {
  /** A Jinja chat template file to use instead of the model's own. Default: the model's (tokenizer_config.json or chat_template.jinja). */
  chatTemplateFile?: string;
  /** The system message that starts every conversation (kept across `reset()`). Default: none. */
  systemPrompt?: string;
}

/**
 * A function the model may call between turns (node-llama-cpp's defineChatSessionFunction): its
 * parameters' JSON schema reaches the model through the template's `tools`, and a call's arguments,
 * parsed, are handed to `handler`, whose result (as JSON) the model reads before it goes on.
 */
export interface ChatSessionFunction<Params = any> {  // eslint-disable-line @typescript-eslint/no-explicit-any
  description?: string;
  /** JSON schema of the arguments (the keywords structured output supports). Default: no arguments. */
  params?: Record<string, unknown>;
  handler(params: Params): unknown;
}

/** Types a function for ChatPromptOptions.functions (the identity, as node-llama-cpp's). */
export function defineChatSessionFunction<Params>(definition: ChatSessionFunction<Params>): ChatSessionFunction<Params> {
  return definition;
}

/** What `prompt` takes: LLM.generate's options, with maxTokens defaulting to 256. */
export type ChatPromptOptions = Omit<LLMGenerateOptions, 'maxTokens'> & {
  /** Tokens of each answer at most. Default 256. */
  maxTokens?: number;
  /** Functions the model may call, by name. Default: none. */
  functions?: Record<string, ChatSessionFunction>;
  /**
   * `auto` (default): the model decides; `required`: its first answer must be a call (forced by a
   * grammar, the arguments valid), later ones are free.
   */
  functionCall?: 'auto' | 'required';
  /** Calls at most in one prompt; then the model answers without functions. Default 8. */
  maxFunctionCalls?: number;
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
    const { functions, functionCall = 'auto', maxFunctionCalls = 8, ...generateOptions } = options;
    const tools: ToolDefinition[] | undefined = functions && Object.keys(functions).length > 0
      ? validateTools(Object.entries(functions).map(([name, fn]) => ({ type: 'function', function: { name, description: fn.description, parameters: fn.params ?? { type: 'object', properties: {} } } })), 'functions')
      : undefined;
    let messages: ChatMessage[] = [...this.#messages, { role: 'user', content: text }];
    let calls = 0;
    for (;;) {
      const offerTools = tools && calls < maxFunctionCalls ? tools : undefined;
      const rendered = this.#template.render(messages, { tools: offerTools });
      // The template already wrote the special tokens it wants (a bos token among them).
      const inputIds = this.llm.tokenizer.encode(rendered, { addSpecialTokens: false });
      const forced = offerTools && functionCall === 'required' && calls === 0 ? await this.llm.compileToolCall(offerTools, { field: 'functions' }) : undefined;
      let result: LLMGenerateResult;
      try {
        result = await this.llm.generate(inputIds, {
          ...generateOptions,
          maxTokens: generateOptions.maxTokens ?? 256,
          ...(forced ? { tokenMask: forced.maskSource() } : {}),
        });
      } finally {
        forced?.dispose();
      }
      const found: ToolCall[] = offerTools ? parseToolCalls(result.text, () => `call_${randomUUID().slice(0, 8)}`).calls : [];
      if (found.length === 0 || result.finishReason === 'cancelled') {
        if (result.finishReason !== 'cancelled' || result.text.length > 0) {
          this.#messages = [...messages, { role: 'assistant', content: result.text.trim() }];
        }
        return result;
      }
      // Run the calls, in order, and let the model read their results.
      messages = [...messages, { role: 'assistant', content: result.text.trim() }];
      for (const call of found) {
        calls++;
        const fn = (functions as Record<string, ChatSessionFunction>)[call.function.name];
        const value = await fn.handler(JSON.parse(call.function.arguments));
        messages = [...messages, { role: 'tool', content: JSON.stringify(value ?? null), name: call.function.name }];
      }
    }
  }
}
