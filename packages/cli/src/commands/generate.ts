import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { LLM } from '@kiln/runtime';
import { CliError, reportCommandError } from '../errors';
import { writeFloat32Safetensors } from '../logits-file';
import { resolveModel } from '../model-cache';
import { exitCleanlyOnSignals, ProgressLine } from '../progress-line';
import { parsePositiveInteger } from './build';

/** Default of --max-tokens: a few sentences of the built-in model, generated in well under a second. */
export const DEFAULT_MAX_TOKENS = 64;

/** The options as commander hands them over (strings, unparsed). */
interface GenerateCommandOptions {
  model?: string;
  engine?: string;
  prompt?: string;
  inputIds?: string;
  maxTokens: string;
  json?: boolean;
  logitsOut?: string;
  ignoreEos?: boolean;
  threads?: string;
}

function parseInputIds(value: string): number[] {
  return value.split(',').map((part) => {
    const parsed = /^\s*\d+\s*$/.test(part) ? Number(part) : Number.NaN;
    if (!Number.isSafeInteger(parsed)) {
      throw new CliError(`--input-ids: ${JSON.stringify(part)} is not a token id (expected comma-separated non-negative integers, e.g. 1,2,3)`);
    }
    return parsed;
  });
}

/** The cached engine of a model folder (default: the built-in model), converted and built on first use. */
async function engineForModel(modelDir: string | undefined, gatherContextLogits: boolean): Promise<string> {
  // First-use progress goes to a terminal's stderr only: scripts and pipes get nothing but the result.
  const progress = new ProgressLine();
  try {
    const resolved = await exitCleanlyOnSignals(() =>
      resolveModel({
        modelDir,
        // Context logits need an LM head over every prompt token, which only such a build has.
        buildConfig: { gatherContextLogits },
        onProgress: (message) => progress.update(message),
      }),
    );
    return resolved.engineDir;
  } finally {
    progress.clear();
  }
}

async function generate(options: GenerateCommandOptions): Promise<void> {
  // Everything the command line can get wrong is checked before a model is converted or loaded.
  if (options.model !== undefined && options.engine !== undefined) throw new CliError('give --model or --engine, not both');
  if ((options.prompt === undefined) === (options.inputIds === undefined)) throw new CliError('give exactly one of --prompt and --input-ids');
  const prompt = options.prompt ?? parseInputIds(options.inputIds as string);
  const maxTokens = parsePositiveInteger('--max-tokens', options.maxTokens);
  const numThreads = options.threads === undefined ? undefined : parsePositiveInteger('--threads', options.threads);
  const logitsOut = options.logitsOut === undefined ? undefined : path.resolve(options.logitsOut);
  if (logitsOut !== undefined && !(await fs.stat(path.dirname(logitsOut)).catch(() => undefined))?.isDirectory()) {
    throw new CliError(`--logits-out: folder ${path.dirname(logitsOut)} does not exist`);
  }

  const engineDir = options.engine ?? (await engineForModel(options.model, logitsOut !== undefined));

  const llm = await LLM.load(engineDir, { numThreads });
  try {
    const inputIds = typeof prompt === 'string' ? llm.tokenizer.encode(prompt) : prompt;
    const result = await llm.generate(inputIds, {
      maxTokens,
      ignoreEos: options.ignoreEos === true,
      returnContextLogits: logitsOut !== undefined,
      returnGenerationLogits: logitsOut !== undefined,
      onText: options.json ? undefined : (delta) => process.stdout.write(delta),
    });
    if (logitsOut !== undefined) {
      await writeFloat32Safetensors(logitsOut, [
        { name: 'context_logits', shape: [inputIds.length, result.vocabSize], data: result.contextLogits as Float32Array },
        { name: 'generation_logits', shape: [result.outputIds.length, result.vocabSize], data: result.generationLogits as Float32Array },
      ]);
    }
    process.stdout.write(
      options.json ? `${JSON.stringify({ outputIds: result.outputIds, text: result.text, finishReason: result.finishReason })}\n` : '\n',
    );
  } finally {
    llm.dispose();
  }
}

export function registerGenerateCommand(program: Command): void {
  program
    .command('generate')
    .description('Generate a continuation of a prompt (greedy). With no --model or --engine, uses the built-in scribe-7m.')
    .option('--model <hf-dir>', 'a Hugging Face model folder, converted and built on first use (cached)')
    .option('--engine <engine-dir>', 'an engine folder made by `kiln build`')
    .option('--prompt <text>', 'the prompt text')
    .option('--input-ids <ids>', 'the prompt as comma-separated token ids, e.g. 1,2,3')
    .option('--max-tokens <n>', 'tokens to generate at most', String(DEFAULT_MAX_TOKENS))
    .option('--json', 'print one JSON object {"outputIds", "text", "finishReason"} instead of streaming text')
    .option('--logits-out <file>', 'write float32 context_logits [promptLength, vocab] and generation_logits [generated, vocab] as safetensors')
    .option('--ignore-eos', 'keep generating past the end-of-sequence token')
    .option('--threads <n>', 'CPU threads for the kernels (default: all cores)')
    .action(async (options: GenerateCommandOptions) => {
      try {
        await generate(options);
      } catch (error) {
        reportCommandError('generate', error);
      }
    });
}
