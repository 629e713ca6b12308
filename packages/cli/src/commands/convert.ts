import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { CHECKPOINT_DTYPES, convertCheckpoint, isCheckpointDType, rankWeightsFile } from '@kiln/convert';
// Importing @kiln/models registers its architectures.
import { listArchitectures } from '@kiln/models';
import { CliError, reportCommandError } from '../errors';
import { parsePositiveInteger } from './build';
import { exitCleanlyOnSignals, formatBytes, ProgressLine } from '../progress-line';

interface ConvertFlags {
  model?: string;
  output?: string;
  dtype?: string;
  allowNonFinite?: boolean;
  tpSize?: string;
  ppSize?: string;
  listArchitectures?: boolean;
}

/** `kiln convert --model <hf-dir> --output <checkpoint-dir> [--dtype float32|float16|bfloat16] [--list-architectures]` */
export function registerConvertCommand(program: Command): void {
  program
    .command('convert')
    .description('Convert a Hugging Face model folder (config.json + safetensors) or a GGUF file into a Kiln checkpoint')
    .option('--model <hf-dir|file.gguf>', 'Hugging Face model folder (config.json, model.safetensors or a sharded index, tokenizer files) or a GGUF file')
    .option('--output <checkpoint-dir>', 'Kiln checkpoint folder to create (an earlier checkpoint there is replaced)')
    .option(
      '--dtype <dtype>',
      `weight dtype: ${CHECKPOINT_DTYPES.join(', ')} (default: the model's dtype, else float32; quantized GGUF tensors: float16)`,
    )
    .option('--allow-non-finite', 'convert weights holding NaN or infinite values (refused by default: such a model generates garbage)')
    .option('--tp-size <n>', 'tensor parallelism: split each layer across n ranks (heads and MLP width must divide by n; default 1)')
    .option('--pp-size <n>', 'pipeline parallelism: split the layers into n stages (default 1); run the engine with `mpirun -n <tp x pp>`')
    .option('--list-architectures', 'print the supported Hugging Face architectures and exit')
    .action(async (flags: ConvertFlags) => {
      const progress = new ProgressLine();
      try {
        await runConvert(flags, progress);
      } catch (error) {
        progress.clear();
        reportCommandError('convert', error);
      }
    });
}

async function runConvert(flags: ConvertFlags, progress: ProgressLine): Promise<void> {
  if (flags.listArchitectures) {
    process.stdout.write(listArchitectures().map((name) => `${name}\n`).join(''));
    return;
  }
  if (!flags.model) throw new CliError('--model <hf-dir> is required');
  if (!flags.output) throw new CliError('--output <checkpoint-dir> is required');
  if (flags.dtype !== undefined && !isCheckpointDType(flags.dtype)) {
    throw new CliError(`--dtype: expected one of ${CHECKPOINT_DTYPES.join(', ')}, got ${JSON.stringify(flags.dtype)}`);
  }

  const started = process.hrtime.bigint();
  progress.update(`converting ${flags.model}: reading and checking the checkpoint`);
  // A file is a GGUF model (the reader checks its magic); a folder a Hugging Face one.
  const isFile = (await fs.stat(flags.model).catch(() => undefined))?.isFile() === true;
  const result = await exitCleanlyOnSignals(() =>
    convertCheckpoint({
      ...(isFile ? { modelFile: flags.model! } : { modelDir: flags.model! }),
      outputDir: flags.output!,
      dtype: flags.dtype as (typeof CHECKPOINT_DTYPES)[number] | undefined,
      allowNonFinite: flags.allowNonFinite === true,
      tpSize: flags.tpSize === undefined ? undefined : parsePositiveInteger('--tp-size', flags.tpSize),
      ppSize: flags.ppSize === undefined ? undefined : parsePositiveInteger('--pp-size', flags.ppSize),
      // The native writer reports the start and the end of the write, not each tensor.
      onProgress: ({ done, total }) =>
        progress.update(done < total ? `converting: writing ${total} tensors` : `converting: ${total} tensors written`),
    }),
  );
  progress.clear();
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const { worldSize, tpSize, ppSize } = result.config.mapping;
  let size = 0;
  for (let rank = 0; rank < worldSize; rank++) size += (await fs.stat(path.join(result.outputDir, rankWeightsFile(rank)))).size;
  const ranks = worldSize > 1 ? `, tp ${tpSize} x pp ${ppSize}: ${worldSize} ranks` : '';
  process.stdout.write(
    `Converted ${result.config.architecture} (${result.config.dtype}, ${formatBytes(size)}${ranks}) to ${result.outputDir} ` +
      `in ${seconds.toFixed(1)} s\n`,
  );
  // A Q8_0/Q4_0 file can keep its blocks (decision 0016): say how, unless it was already imported so.
  const types = result.ggufMatrixTypes ?? [];
  if (types.some((t) => t === 'Q8_0' || t === 'Q4_0') && types.every((t) => ['Q8_0', 'Q4_0', 'F32', 'F16', 'BF16'].includes(t))) {
    process.stdout.write(
      result.config.dtype === 'float32'
        ? 'Its Q8_0/Q4_0 blocks are kept exactly: `kiln build --quantization q8_0` runs them as llama.cpp does.\n'
        : 'Its matrices are Q8_0/Q4_0: convert with --dtype float32, then `kiln build --quantization q8_0`, to keep every block and run them as llama.cpp does.\n',
    );
  }
}
