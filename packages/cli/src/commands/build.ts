import type { Command } from 'commander';
import { buildEngine, QUANTIZATION_REPORT_FILE, type BuildConfig, type CpuBuildConfig, type CudaBuildConfig } from '@kiln/builder';
import { addTargetOptions, targetConfigFromFlags, type TargetFlags } from '../engine-options';
import { CliError, reportCommandError } from '../errors';
import { exitCleanlyOnSignals, ProgressLine } from '../progress-line';

interface BuildFlags extends TargetFlags {
  checkpoint?: string;
  output?: string;
  maxBatchSize?: string;
  maxBeamWidth?: string;
  maxSeqLen?: string;
  maxNumTokens?: string;
  gatherContextLogits?: boolean;
  tokensPerBlock?: string;
  quantization?: string;
  groupSize?: string;
  bf16LinearInputs?: boolean;
  force?: boolean;
}

/**
 * A whole positive decimal integer, or a CliError naming the flag. Ranges beyond "positive" are the
 * builder's to check (it knows the model's limits).
 */
export function parsePositiveInteger(flag: string, value: string): number {
  const parsed = /^\s*[0-9]+\s*$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(parsed) || parsed <= 0) {
    throw new CliError(`${flag}: expected a positive integer, got ${JSON.stringify(value)}`);
  }
  return parsed;
}

/**
 * `kiln build --checkpoint <checkpoint-dir> --output <engine-dir> [--target cpu|cuda] [--dtype D]
 * [--compute-capability X.Y] [--max-batch-size N] [--max-seq-len N] [--max-num-tokens N]
 * [--gather-context-logits] [--tokens-per-block N] [--quantization int8|int4|fp8|q8_0|none] [--group-size N]
 * [--bf16-linear-inputs] [--force]`
 */
export function registerBuildCommand(program: Command): void {
  const command = program
    .command('build')
    .description('Compile a Kiln checkpoint into an engine for this machine\'s CPU (default) or a CUDA GPU')
    .option('--checkpoint <checkpoint-dir>', 'Kiln checkpoint folder (the output of `kiln convert`)')
    .option('--output <engine-dir>', 'engine folder to create (an engine with the same build hash there is reused)');
  addTargetOptions(command, { forModel: false })
    .option('--max-batch-size <n>', 'most sequences in one step (default 8)')
    .option('--max-seq-len <n>', "most positions of one sequence (default: the model's maximum, capped at 4096)")
    .option('--max-num-tokens <n>', 'most packed tokens in one step (default: min(max-seq-len, 2048))')
    .option('--gather-context-logits', 'let requests return the logits of every prompt token')
    .option('--max-beam-width <n>', 'most beams of one beam search request, at most max-batch-size (default 1: no beam search)')
    .option('--tokens-per-block <n>', 'tokens per KV cache block (default 16)')
    .option('--quantization <method>', 'quantization of the linear matrices: int8 (weight-only, per-channel scales), int4 (weight-only, per-group scales), fp8 (e4m3 weights with a scale per matrix and activations with a dynamic scale per row; cuda on sm_89+, or cpu as its reference), q8_0 (cpu: llama.cpp\'s Q8_0 blocks, inputs quantized too as llama.cpp does; keeps GGUF Q8_0/Q4_0 weights exactly) or none (default none)')
    .option('--group-size <n>', 'int4: input features per scale, a multiple of 32 (default 32 on cpu, 128 on cuda)')
    .option('--bf16-linear-inputs', 'cpu, --dtype bfloat16: linears read their input rounded to bfloat16, as cuda engines do (AVX512_BF16 prefill at twice the float32 rate; logits ~1e-3 from a float32-activation reference)')
    .option('--force', 'rebuild even when the output folder holds an engine with the same build hash')
    .action(async (flags: BuildFlags) => {
      const progress = new ProgressLine();
      try {
        await runBuild(flags, progress);
      } catch (error) {
        progress.clear();
        reportCommandError('build', error);
      }
    });
}

function buildConfigFromFlags(flags: BuildFlags): Partial<BuildConfig> {
  const config: Partial<BuildConfig> = targetConfigFromFlags(flags);
  if (flags.maxBatchSize !== undefined) config.maxBatchSize = parsePositiveInteger('--max-batch-size', flags.maxBatchSize);
  if (flags.maxSeqLen !== undefined) config.maxSeqLen = parsePositiveInteger('--max-seq-len', flags.maxSeqLen);
  if (flags.maxNumTokens !== undefined) config.maxNumTokens = parsePositiveInteger('--max-num-tokens', flags.maxNumTokens);
  if (flags.maxBeamWidth !== undefined) config.maxBeamWidth = parsePositiveInteger('--max-beam-width', flags.maxBeamWidth);
  if (flags.tokensPerBlock !== undefined) config.tokensPerBlock = parsePositiveInteger('--tokens-per-block', flags.tokensPerBlock);
  if (flags.gatherContextLogits) config.gatherContextLogits = true;
  if (flags.quantization !== undefined) {
    if (!['int8', 'int4', 'fp8', 'q8_0', 'none'].includes(flags.quantization)) {
      throw new CliError(`--quantization: expected int8, int4, fp8, q8_0 or none, got ${JSON.stringify(flags.quantization)}`);
    }
    if (flags.quantization !== 'none') (config as Partial<CpuBuildConfig>).quantization = flags.quantization as CpuBuildConfig['quantization'];
  }
  if (flags.groupSize !== undefined) {
    if (flags.quantization !== 'int4') throw new CliError('--group-size: applies to --quantization int4 only');
    (config as Partial<CpuBuildConfig | CudaBuildConfig>).groupSize = parsePositiveInteger('--group-size', flags.groupSize);
  }
  if (flags.bf16LinearInputs) {
    if (config.target === 'cuda') throw new CliError('--bf16-linear-inputs: applies to --target cpu only');
    (config as Partial<CpuBuildConfig>).bf16LinearInputs = true;
  }
  return config;
}

async function runBuild(flags: BuildFlags, progress: ProgressLine): Promise<void> {
  if (!flags.checkpoint) throw new CliError('--checkpoint <checkpoint-dir> is required');
  if (!flags.output) throw new CliError('--output <engine-dir> is required');
  const config = buildConfigFromFlags(flags);

  const started = process.hrtime.bigint();
  const result = await exitCleanlyOnSignals(() =>
    buildEngine({
      checkpointDir: flags.checkpoint!,
      outputDir: flags.output!,
      config,
      force: flags.force === true,
      onProgress: ({ stage, message }) => progress.update(`building: ${stage}: ${message}`),
    }),
  );
  progress.clear();
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const c = result.config;
  const weights = c.quantization ? `, ${c.quantization}${c.groupSize ? ` (group ${c.groupSize})` : ''} weights` : '';
  const settings =
    `maxBatchSize ${c.maxBatchSize}, maxSeqLen ${c.maxSeqLen}, maxNumTokens ${c.maxNumTokens}, ` +
    `tokensPerBlock ${c.tokensPerBlock}, gatherContextLogits ${c.gatherContextLogits}, ` +
    (c.target === 'cuda'
      ? `cuda (compute capability ${c.computeCapability}, ${c.dtype}${weights})`
      : c.isa + weights + (c.bf16LinearInputs ? ', bfloat16 linear inputs' : ''));
  process.stdout.write(
    result.cached
      ? `Engine ${result.engineDir} is up to date (build ${result.buildHash}; ${settings}); --force rebuilds it\n`
      : `Built engine ${result.engineDir} (build ${result.buildHash}; ${settings}) in ${seconds.toFixed(1)} s\n`,
  );
  // The quantization error report: the worst matrices (by RMS relative error), the full list in the file.
  if (result.quantization && result.quantization.length > 0) {
    const worst = [...result.quantization].sort((a, b) => b.rmsRelativeError - a.rmsRelativeError);
    const pct = (v: number) => `${(100 * v).toFixed(2)}%`;
    process.stdout.write(
      `Quantized ${worst.length} matrices to ${c.quantization === 'fp8' ? 'float8_e4m3fn' : (c.quantization ?? 'int8')}${int4Kept(c.quantization, result.int8Weights)}: RMS relative error ${pct(worst[worst.length - 1].rmsRelativeError)}-${pct(worst[0].rmsRelativeError)}, ` +
        `max element error ${pct(Math.max(...worst.map((q) => q.maxRelativeError)))} of its ${c.quantization === 'fp8' ? "matrix's" : "row's"} largest weight; per matrix in ${QUANTIZATION_REPORT_FILE}:\n` +
        worst.slice(0, 5).map((q) => `  ${q.name}: RMS ${pct(q.rmsRelativeError)}, max ${pct(q.maxRelativeError)}\n`).join(''),
    );
  }
}

/** int4 builds keep the first layer's linears and the LM head at int8 (decision 0014): say how many. */
function int4Kept(quantization: string | undefined, int8Weights: readonly string[] | undefined): string {
  if (quantization !== 'int4' || !int8Weights || int8Weights.length === 0) return '';
  return ` (${int8Weights.length} of them int8: the first layer's and the LM head, decision 0014)`;
}
