import type { Command } from 'commander';
import { downloadModel } from '@kiln/hub';
import { reportCommandError } from '../errors';
import { exitCleanlyOnSignals, formatBytes, ProgressLine } from '../progress-line';

interface PullOptions {
  offline?: boolean;
}

/** `kiln pull org/name[@revision]`: downloads what a conversion reads; prints the model folder. */
async function pull(id: string, options: PullOptions): Promise<void> {
  const progress = new ProgressLine();
  let result;
  try {
    result = await exitCleanlyOnSignals(() =>
      downloadModel(id, {
        offline: options.offline === true ? true : undefined,
        onProgress: (p) => progress.update(`${id}: ${p.file} ${formatBytes(p.bytes)} / ${formatBytes(p.totalBytes)}`),
      }),
    );
  } finally {
    progress.clear();
  }
  const what = result.downloadedBytes > 0 ? `downloaded ${formatBytes(result.downloadedBytes)}` : 'already downloaded';
  process.stderr.write(`kiln pull: ${result.repo}@${result.revision} (${result.commit.slice(0, 12)}): ${what}, ${result.files.length} files\n`);
  process.stdout.write(`${result.dir}\n`);
}

export function registerPullCommand(program: Command): void {
  program
    .command('pull <model>')
    .description(
      'Download a Hugging Face Hub model (org/name[@revision]): config, safetensors weights, tokenizer, generation config and chat ' +
        'template, into the Hugging Face cache ($HF_HOME/hub); resumable. Prints the model folder. Gated models need $HF_TOKEN.',
    )
    .option('--offline', 'use only what is already downloaded (as HF_HUB_OFFLINE=1)')
    .action(async (id: string, options: PullOptions) => {
      try {
        await pull(id, options);
      } catch (error) {
        reportCommandError('pull', error);
      }
    });
}
