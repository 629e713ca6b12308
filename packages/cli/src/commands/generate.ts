import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { Option, type Command } from 'commander';
import { LLM, type LLMGenerateOptions } from '@kiln/runtime';
import { SamplingConfigError, validateSamplingConfig, type SamplingConfig } from '@kiln/sampling';
import {
  addKvCacheOptions,
  addTargetOptions,
  describeEngine,
  kvCacheOptionsFromFlags,
  modelTargetConfig,
  VERBOSE_OPTION_HELP,
  type KvCacheFlags,
  type TargetFlags,
} from '../engine-options';
import { CliError, reportCommandError } from '../errors';
import { writeFloat32Safetensors } from '../logits-file';
import { engineForModel } from '../model-cache';
import { parsePositiveInteger } from './build';

/** Default of --max-tokens: a few sentences of the built-in model, generated in well under a second. */
export const DEFAULT_MAX_TOKENS = 64;

/** The options as commander hands them over (strings, unparsed). */
interface GenerateCommandOptions extends TargetFlags, KvCacheFlags {
  model?: string;
  engine?: string;
  prompt?: string;
  inputIds?: string;
  maxTokens: string;
  json?: boolean;
  logitsOut?: string;
  ignoreEos?: boolean;
  threads?: string;
  verbose?: boolean;
  temperature?: string;
  topK?: string;
  topP?: string;
  minP?: string;
  repetitionPenalty?: string;
  presencePenalty?: string;
  frequencyPenalty?: string;
  noRepeatNgramSize?: string;
  seed?: string;
  stop: string[];
  badWords: string[];
  includeStopText?: boolean;
  minTokens?: string;
  beamWidth?: string;
  lengthPenalty?: string;
  earlyStopping?: string;
  numReturnSequences?: string;
  logprobs?: string;
}

/** The command-line flag of each SamplingConfig option, for error messages. */
const SAMPLING_FLAGS: Record<string, string> = {
  temperature: '--temperature', topK: '--top-k', topP: '--top-p', minP: '--min-p', repetitionPenalty: '--repetition-penalty',
  presencePenalty: '--presence-penalty', frequencyPenalty: '--frequency-penalty', noRepeatNgramSize: '--no-repeat-ngram-size',
  seed: '--seed', stopWords: '--stop', badWords: '--bad-words', includeStopText: '--include-stop-text', minTokens: '--min-tokens',
  beamWidth: '--beam-width', lengthPenalty: '--length-penalty', earlyStopping: '--early-stopping',
  numReturnSequences: '--num-return-sequences', logprobs: '--logprobs', ignoreEos: '--ignore-eos',
};

function flagOf(option: string): string {
  const base = option.replace(/\[.*$/, '');
  return SAMPLING_FLAGS[base] ?? SAMPLING_FLAGS[option] ?? option;
}

function parseNumber(flag: string, value: string): number {
  const parsed = value.trim() === '' ? NaN : Number(value);
  if (!Number.isFinite(parsed)) throw new CliError(`${flag}: expected a number, got ${JSON.stringify(value)}`);
  return parsed;
}

function parseNonNegativeInteger(flag: string, value: string): number {
  const parsed = /^\s*[0-9]+\s*$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(parsed)) throw new CliError(`${flag}: expected a non-negative integer, got ${JSON.stringify(value)}`);
  return parsed;
}

/** The sampling flags as a SamplingConfig, validated (a bad value is a CliError naming its flag). */
export function samplingFromFlags(options: GenerateCommandOptions): SamplingConfig {
  const config: SamplingConfig = {};
  const num = (flag: string, value: string | undefined) => (value === undefined ? undefined : parseNumber(flag, value));
  const int = (flag: string, value: string | undefined) => (value === undefined ? undefined : parseNonNegativeInteger(flag, value));
  config.temperature = num('--temperature', options.temperature);
  config.topK = int('--top-k', options.topK);
  config.topP = num('--top-p', options.topP);
  config.minP = num('--min-p', options.minP);
  config.repetitionPenalty = num('--repetition-penalty', options.repetitionPenalty);
  config.presencePenalty = num('--presence-penalty', options.presencePenalty);
  config.frequencyPenalty = num('--frequency-penalty', options.frequencyPenalty);
  config.noRepeatNgramSize = int('--no-repeat-ngram-size', options.noRepeatNgramSize);
  if (options.seed !== undefined) {
    if (!/^\s*[0-9]+\s*$/.test(options.seed)) throw new CliError(`--seed: expected an integer in [0, 2^64 - 1], got ${JSON.stringify(options.seed)}`);
    config.seed = BigInt(options.seed.trim());
  }
  if (options.stop.length > 0) config.stopWords = options.stop;
  if (options.badWords.length > 0) config.badWords = options.badWords;
  if (options.includeStopText) config.includeStopText = true;
  config.minTokens = int('--min-tokens', options.minTokens);
  config.beamWidth = int('--beam-width', options.beamWidth);
  config.lengthPenalty = num('--length-penalty', options.lengthPenalty);
  if (options.earlyStopping !== undefined) {
    if (options.earlyStopping !== 'true' && options.earlyStopping !== 'false') {
      throw new CliError(`--early-stopping: expected true or false, got ${JSON.stringify(options.earlyStopping)}`);
    }
    config.earlyStopping = options.earlyStopping === 'true';
  }
  config.numReturnSequences = int('--num-return-sequences', options.numReturnSequences);
  config.logprobs = int('--logprobs', options.logprobs);
  const given = Object.fromEntries(Object.entries(config).filter(([, value]) => value !== undefined)) as SamplingConfig;
  try {
    validateSamplingConfig(given);
  } catch (error) {
    if (error instanceof SamplingConfigError) throw new CliError(`${flagOf(error.option)}: ${error.message}`);
    throw error;
  }
  return given;
}

// Commander reads a long flag starting with --no- as the negation of another flag; this one takes a value.
function noRepeatNgramSizeOption(): Option {
  const option = new Option('--no-repeat-ngram-size <n>', 'never repeat an n-gram of this size (default 0: off)');
  option.negate = false;
  return option;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
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

async function generate(options: GenerateCommandOptions): Promise<void> {
  // Everything the command line can get wrong is checked before a model is converted or loaded.
  if (options.model !== undefined && options.engine !== undefined) throw new CliError('give --model or --engine, not both');
  if ((options.prompt === undefined) === (options.inputIds === undefined)) throw new CliError('give exactly one of --prompt and --input-ids');
  const prompt = options.prompt ?? parseInputIds(options.inputIds as string);
  const maxTokens = parsePositiveInteger('--max-tokens', options.maxTokens);
  const sampling = samplingFromFlags(options);
  const numThreads = options.threads === undefined ? undefined : parsePositiveInteger('--threads', options.threads);
  const targetConfig = modelTargetConfig(options);
  const kvCache = kvCacheOptionsFromFlags(options);
  const logitsOut = options.logitsOut === undefined ? undefined : path.resolve(options.logitsOut);
  if (logitsOut !== undefined && !(await fs.stat(path.dirname(logitsOut)).catch(() => undefined))?.isDirectory()) {
    throw new CliError(`--logits-out: folder ${path.dirname(logitsOut)} does not exist`);
  }

  // Context logits need an LM head over every prompt token, which only such a build has.
  const engineDir = options.engine ?? (await engineForModel(options.model, { ...targetConfig, gatherContextLogits: logitsOut !== undefined }));

  const llm = await LLM.load(engineDir, { numThreads, ...kvCache });
  try {
    if (options.verbose) process.stderr.write(`${describeEngine(llm.info)}\n`);
    const inputIds = typeof prompt === 'string' ? llm.tokenizer.encode(prompt) : prompt;
    const multiple = (sampling.numReturnSequences ?? 1) > 1;
    const request: LLMGenerateOptions = {
      ...sampling,
      maxTokens,
      ignoreEos: options.ignoreEos === true,
      returnContextLogits: logitsOut !== undefined,
      returnGenerationLogits: logitsOut !== undefined,
      onText: options.json || multiple ? undefined : (delta) => process.stdout.write(delta),
    };
    let result;
    try {
      result = await llm.generate(inputIds, request);
    } catch (error) {
      // Limits only the engine knows (its maxBeamWidth, vocabulary) are checked at enqueue.
      if (error instanceof SamplingConfigError) throw new CliError(`${flagOf(error.option)}: ${error.message}`);
      throw error;
    }
    if (logitsOut !== undefined) {
      await writeFloat32Safetensors(logitsOut, [
        { name: 'context_logits', shape: [inputIds.length, result.vocabSize], data: result.contextLogits as Float32Array },
        { name: 'generation_logits', shape: [result.outputIds.length, result.vocabSize], data: result.generationLogits as Float32Array },
      ]);
    }
    if (options.json) {
      const json: Record<string, unknown> = { outputIds: result.outputIds, text: result.text, finishReason: result.finishReason };
      if (result.logprobs) json.logprobs = result.logprobs;
      if (result.sequences && result.sequences.length > 1) {
        json.sequences = result.sequences.map((s) => ({ outputIds: s.outputIds, text: s.text, finishReason: s.finishReason, score: s.score }));
      }
      process.stdout.write(`${JSON.stringify(json)}\n`);
    } else if (multiple && result.sequences) {
      // Several sequences: one block each, best first, with its score.
      result.sequences.forEach((s, index) => process.stdout.write(`${index > 0 ? '\n' : ''}[${index}] score ${s.score.toFixed(6)}\n${s.text}\n`));
    } else {
      process.stdout.write('\n');
    }
  } finally {
    llm.dispose();
  }
}

export function registerGenerateCommand(program: Command): void {
  const command = program
    .command('generate')
    .description('Generate a continuation of a prompt (greedy by default). With no --model or --engine, uses the built-in scribe-7m.')
    .option('--model <model>', 'a Hugging Face model folder or Hub id org/name[@revision], downloaded, converted and built on first use (cached)')
    .option('--engine <engine-dir>', 'an engine folder made by `kiln build`');
  addTargetOptions(command, { forModel: true });
  addKvCacheOptions(command)
    .option('--prompt <text>', 'the prompt text')
    .option('--input-ids <ids>', 'the prompt as comma-separated token ids, e.g. 1,2,3')
    .option('--max-tokens <n>', 'tokens to generate at most', String(DEFAULT_MAX_TOKENS))
    .option('--json', 'print one JSON object {"outputIds", "text", "finishReason"} instead of streaming text')
    .option('--logits-out <file>', 'write float32 context_logits [promptLength, vocab] and generation_logits [generated, vocab] as safetensors')
    .option('--ignore-eos', 'keep generating past the end-of-sequence token')
    .option('--threads <n>', 'CPU threads for the kernels (default: all cores)')
    .option('--verbose', VERBOSE_OPTION_HELP)
    .option('--temperature <t>', 'sampling temperature, >= 0 (default 0: greedy)')
    .option('--top-k <k>', 'keep the k most likely tokens (default 0: off)')
    .option('--top-p <p>', 'nucleus sampling, in (0, 1] (default 1: off)')
    .option('--min-p <p>', 'drop tokens below p x the most likely one, in [0, 1] (default 0: off)')
    .option('--repetition-penalty <r>', 'penalize tokens already seen, > 0 (default 1: off)')
    .option('--presence-penalty <x>', 'subtract x from tokens generated so far (default 0: off)')
    .option('--frequency-penalty <x>', 'subtract x per time a token was generated (default 0: off)')
    .addOption(noRepeatNgramSizeOption())
    .option('--seed <n>', 'random seed, 0 to 2^64 - 1 (default: random); the same seed gives the same tokens')
    .option('--stop <text>', 'stop when the text contains this (repeatable); the stop text is left out', collect, [])
    .option('--include-stop-text', 'keep the matched stop text in the output')
    .option('--bad-words <text>', 'never generate this text (repeatable)', collect, [])
    .option('--min-tokens <n>', 'no end-of-sequence before n tokens (default 0)')
    .option('--beam-width <n>', 'beam search with n beams (default 1: off; at most the engine\'s --max-beam-width)')
    .option('--length-penalty <x>', 'beam search: score = sum of logprobs / length^x (default 1)')
    .option('--early-stopping <bool>', 'beam search: true stops once beam-width sequences finished (default false)')
    .option('--num-return-sequences <n>', 'sequences returned: best beams, or independent samples (default 1)')
    .option('--logprobs <n>', 'return each token\'s logprob and the n most likely (0 to 20; with --json)')
    .action(async (options: GenerateCommandOptions) => {
      try {
        await generate(options);
      } catch (error) {
        reportCommandError('generate', error);
      }
    });
}
