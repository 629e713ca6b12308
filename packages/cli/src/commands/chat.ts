// `kiln chat`: an interactive conversation on a terminal (the runtime's ChatSession). Answers stream as
// they are generated. `/reset` forgets the conversation, `/exit` or Ctrl-D leaves; Ctrl-C stops the
// answer being written, or leaves at the prompt.
import * as readline from 'node:readline';
import type { Command } from 'commander';
import { ChatSession, LLM } from '@kiln/runtime';
import { addKvCacheOptions, addTargetOptions, kvCacheOptionsFromFlags, modelTargetConfig, type KvCacheFlags, type TargetFlags } from '../engine-options';
import { CliError, reportCommandError } from '../errors';
import { engineForModel } from '../model-cache';
import { parsePositiveInteger } from './build';

interface ChatCommandOptions extends TargetFlags, KvCacheFlags {
  model?: string;
  engine?: string;
  chatTemplate?: string;
  system?: string;
  maxTokens: string;
  temperature: string;
  topP?: string;
  seed?: string;
  threads?: string;
}

function parseNumber(flag: string, value: string, min: number, max: number): number {
  const number = /^\s*[0-9.eE+-]+\s*$/.test(value) ? Number(value) : NaN;
  if (!(number >= min && number <= max)) throw new CliError(`${flag}: expected a number in [${min}, ${max}], got ${JSON.stringify(value)}`);
  return number;
}

async function chat(options: ChatCommandOptions): Promise<void> {
  if (options.model !== undefined && options.engine !== undefined) throw new CliError('give --model or --engine, not both');
  const maxTokens = parsePositiveInteger('--max-tokens', options.maxTokens);
  const temperature = parseNumber('--temperature', options.temperature, 0, 100);
  const topP = options.topP === undefined ? undefined : parseNumber('--top-p', options.topP, Number.MIN_VALUE, 1);
  const seed = options.seed === undefined ? undefined : parsePositiveInteger('--seed', options.seed);
  const numThreads = options.threads === undefined ? undefined : parsePositiveInteger('--threads', options.threads);
  const engineDir = options.engine ?? (await engineForModel(options.model, modelTargetConfig(options)));
  const llm = await LLM.load(engineDir, { numThreads, ...kvCacheOptionsFromFlags(options) });
  try {
    const session = await ChatSession.create(llm, { chatTemplateFile: options.chatTemplate, systemPrompt: options.system });
    await converse(session, { maxTokens, temperature, topP, seed });
  } finally {
    await llm.dispose();
  }
}

/** The read-answer loop, until /exit, Ctrl-D, or Ctrl-C at the prompt. */
async function converse(session: ChatSession, sampling: { maxTokens: number; temperature: number; topP?: number; seed?: number }): Promise<void> {
  const terminal = process.stdin.isTTY === true;
  const lines = readline.createInterface({ input: process.stdin, output: process.stdout, terminal, prompt: '> ' });
  if (terminal) process.stdout.write('kiln chat: /reset forgets the conversation, /exit or Ctrl-D leaves; Ctrl-C stops an answer.\n');
  let answering: AbortController | undefined;
  // Lines typed and not answered yet (queued, or being answered), and a Ctrl-C that came for a
  // question whose answer had not started yet (typed right after Enter): it stops that answer.
  let pending = 0;
  let stopNext = false;
  let closed = false;
  const done = new Promise<void>((resolve) => lines.once('close', () => {
    closed = true;
    answering?.abort();
    resolve();
  }));
  lines.on('SIGINT', () => {
    if (answering) answering.abort();  // stop this answer, keep the conversation
    else if (pending > 0) stopNext = true;
    else lines.close();
  });
  let turn = 0;
  const ask = async (line: string): Promise<void> => {
    const text = line.trim();
    if (text === '/exit') {
      lines.close();
      return;
    }
    if (text === '/reset') {
      session.reset();
      process.stdout.write('(conversation reset)\n');
      return;
    }
    if (text === '') return;
    answering = new AbortController();
    if (stopNext) {
      stopNext = false;
      answering.abort();
    }
    const { signal } = answering;
    try {
      const seed = sampling.seed === undefined ? undefined : sampling.seed + turn++;
      await session.prompt(text, { ...sampling, seed, signal, onText: (delta) => process.stdout.write(delta) });
    } finally {
      answering = undefined;
    }
    process.stdout.write(signal.aborted && !closed ? '\n(stopped)\n' : '\n');
  };
  // One line at a time: lines typed during an answer wait for it.
  let queue = Promise.resolve();
  lines.on('line', (line) => {
    pending++;
    queue = queue.then(() => ask(line)).finally(() => pending--).then(
      () => {
        if (!closed) lines.prompt();
      },
      (error: unknown) => {
        process.stderr.write(`kiln chat: ${(error as Error).message}\n`);
        if (!closed) lines.prompt();
      },
    );
  });
  lines.prompt();
  await done;
  await queue;
  if (terminal) process.stdout.write('\n');
}

export function registerChatCommand(program: Command): void {
  const command = program
    .command('chat')
    .description('Chat with a model on the terminal, answers streamed (its chat template, or --chat-template). With no --model or --engine, the built-in scribe-7m.')
    .option('--model <model>', 'a Hugging Face model folder or Hub id org/name[@revision], downloaded, converted and built on first use (cached)')
    .option('--engine <engine-dir>', 'an engine folder made by `kiln build`');
  addTargetOptions(command, { forModel: true });
  addKvCacheOptions(command)
    .option('--chat-template <file>', 'a Jinja chat template to use instead of the model\'s own')
    .option('--system <text>', 'a system message that starts the conversation (kept by /reset)')
    .option('--max-tokens <n>', 'tokens per answer at most', '256')
    .option('--temperature <t>', 'sampling temperature, >= 0 (0: greedy)', '0.7')
    .option('--top-p <p>', 'nucleus sampling, in (0, 1] (default 1: off)')
    .option('--seed <n>', 'random seed of the first answer (then seed + 1, ...); default: random')
    .option('--threads <n>', 'CPU threads for the kernels (default: all cores)')
    .action(async (options: ChatCommandOptions) => {
      try {
        await chat(options);
      } catch (error) {
        reportCommandError('chat', error);
      }
    });
}
