// The model's chat template: tokenizer_config.json's `chat_template` (a string, or a list of named
// templates of which "default" is used), else `chat_template.jinja` in the engine directory, or a file
// given by the user (`--chat-template`), rendered with @huggingface/jinja as transformers'
// apply_chat_template does. Shared by the runtime's ChatSession and the server.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

/** The part of @huggingface/jinja's Template that is used (its types are ESM-only; its CommonJS build is required below). */
interface JinjaTemplate {
  render(items?: Record<string, unknown>): string;
}
type JinjaTemplateConstructor = new (source: string) => JinjaTemplate;

/** tokenizer_config.json holds the template and a few token strings; 16 MiB bounds a hostile file. */
const MAX_CONFIG_BYTES = 16 * 1024 * 1024;
const MAX_TEMPLATE_BYTES = 1024 * 1024;

export interface ChatMessage {
  role: string;
  content: string;
  name?: string;
}

/** The messages are not ones the template can format (it raised, or failed on them): the caller's fault. */
export class ChatTemplateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ChatTemplateError';
  }
}

export class ChatTemplate {
  readonly #template: JinjaTemplate;
  readonly #specialTokens: Record<string, string>;

  constructor(source: string, specialTokens: Record<string, string>, origin: string) {
    try {
      const { Template } = require('@huggingface/jinja') as { Template: JinjaTemplateConstructor };
      this.#template = new Template(source);
    } catch (error) {
      throw new Error(`${origin}: the chat template does not parse: ${(error as Error).message}`);
    }
    this.#specialTokens = specialTokens;
  }

  /**
   * The prompt text for `messages`, ending with the assistant's turn header (add_generation_prompt).
   * `tools`: OpenAI-style function definitions, given to the template as its `tools` variable.
   */
  render(messages: ChatMessage[], options: { tools?: unknown[] } = {}): string {
    try {
      return this.#template.render({ messages, add_generation_prompt: true, ...this.#specialTokens, ...(options.tools ? { tools: options.tools } : {}) });
    } catch (error) {
      // Templates reject conversations they cannot format (raise_exception).
      throw new ChatTemplateError(`the chat template rejected the messages: ${(error as Error).message}`);
    }
  }
}

function tokenText(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') return (value as { content: string }).content;
  return undefined;
}

async function readBounded(file: string, limit: number): Promise<string | undefined> {
  const stat = await fs.stat(file).catch(() => undefined);
  if (!stat?.isFile()) return undefined;
  if (stat.size > limit) throw new Error(`${file} is ${stat.size} bytes, more than the ${limit} allowed`);
  return fs.readFile(file, 'utf8');
}

/** A chat template from a file of its own (`--chat-template FILE`); the engine's special tokens from `engineDir`. */
export async function loadChatTemplateFile(file: string, engineDir: string): Promise<ChatTemplate> {
  const source = await readBounded(file, MAX_TEMPLATE_BYTES);
  if (source === undefined) throw new Error(`${file}: no such chat template file`);
  return new ChatTemplate(source, await specialTokensOf(engineDir), file);
}

async function specialTokensOf(engineDir: string): Promise<Record<string, string>> {
  return (await readTokenizerConfig(engineDir)).specialTokens;
}

async function readTokenizerConfig(engineDir: string): Promise<{ config: Record<string, unknown>; configPath: string; specialTokens: Record<string, string> }> {
  const configPath = path.join(engineDir, 'tokenizer_config.json');
  const text = await readBounded(configPath, MAX_CONFIG_BYTES);
  let config: Record<string, unknown> = {};
  if (text !== undefined) {
    try {
      config = JSON.parse(text) as Record<string, unknown>;
    } catch (error) {
      throw new Error(`${configPath}: not valid JSON: ${(error as Error).message}`);
    }
  }
  const specialTokens: Record<string, string> = {};
  for (const key of ['bos_token', 'eos_token', 'pad_token', 'unk_token']) {
    const value = tokenText(config[key]);
    if (value !== undefined) specialTokens[key] = value;
  }
  return { config, configPath, specialTokens };
}

/** The engine's chat template, or undefined when it has none (chat requests then get a 400). */
export async function loadChatTemplate(engineDir: string): Promise<ChatTemplate | undefined> {
  const { config, configPath, specialTokens } = await readTokenizerConfig(engineDir);
  let source: string | undefined;
  let origin = configPath;
  const raw = config.chat_template;
  if (typeof raw === 'string') source = raw;
  else if (Array.isArray(raw)) {
    const named = raw.find((entry) => (entry as { name?: unknown })?.name === 'default') as { template?: unknown } | undefined;
    if (typeof named?.template === 'string') source = named.template;
  }
  if (source === undefined) {
    origin = path.join(engineDir, 'chat_template.jinja');
    source = await readBounded(origin, MAX_TEMPLATE_BYTES);
  }
  return source === undefined ? undefined : new ChatTemplate(source, specialTokens, origin);
}
