import type { Command } from 'commander';
import { exportGguf, GGUF_EXPORT_TYPES, type GgufExportType } from '@kiln/convert';
import { CliError, reportCommandError } from '../errors';
import { exitCleanlyOnSignals, formatBytes, ProgressLine } from '../progress-line';

interface ExportGgufFlags {
  checkpoint?: string;
  output?: string;
  type?: string;
}

/** `kiln export-gguf --checkpoint <dir> --output file.gguf [--type f16|bf16|q8_0|q4_0|f32]` */
export function registerExportGgufCommand(program: Command): void {
  program
    .command('export-gguf')
    .description('Write a Kiln checkpoint as a GGUF file for llama.cpp and node-llama-cpp')
    .option('--checkpoint <checkpoint-dir>', 'Kiln checkpoint folder (from `kiln convert`)')
    .option('--output <file.gguf>', 'GGUF file to write (replaced atomically)')
    .option('--type <type>', `matrix type: ${GGUF_EXPORT_TYPES.join(', ')} (default f16; norms stay f32)`)
    .action(async (flags: ExportGgufFlags) => {
      const progress = new ProgressLine();
      try {
        if (!flags.checkpoint) throw new CliError('--checkpoint <checkpoint-dir> is required');
        if (!flags.output) throw new CliError('--output <file.gguf> is required');
        if (flags.type !== undefined && !(GGUF_EXPORT_TYPES as readonly string[]).includes(flags.type)) {
          throw new CliError(`--type: expected one of ${GGUF_EXPORT_TYPES.join(', ')}, got ${JSON.stringify(flags.type)}`);
        }
        const started = process.hrtime.bigint();
        progress.update(`exporting ${flags.checkpoint} to GGUF`);
        const result = await exitCleanlyOnSignals(() =>
          exportGguf({ checkpointDir: flags.checkpoint!, outputFile: flags.output!, type: flags.type as GgufExportType | undefined }),
        );
        progress.clear();
        const seconds = Number(process.hrtime.bigint() - started) / 1e9;
        // The worst tensor's relative error: what the chosen type cost.
        const worst = result.errors.reduce((a, b) => (b.rmsError / (b.rms || 1) > a.rmsError / (a.rms || 1) ? b : a));
        process.stdout.write(
          `Wrote ${result.outputFile} (${result.architecture}, ${flags.type ?? 'f16'}, ${formatBytes(result.fileSize)}) in ` +
            `${seconds.toFixed(1)} s; largest relative RMS error ${(worst.rmsError / (worst.rms || 1)).toExponential(2)} (${worst.name})\n`,
        );
      } catch (error) {
        progress.clear();
        reportCommandError('export-gguf', error);
      }
    });
}
