import { Command } from 'commander';
import { registerBenchCommand } from './commands/bench';
import { registerBuildCommand } from './commands/build';
import { registerChatCommand } from './commands/chat';
import { registerCacheCommand } from './commands/cache';
import { registerConvertCommand } from './commands/convert';
import { registerExportGgufCommand } from './commands/export-gguf';
import { registerGenerateCommand } from './commands/generate';
import { registerPullCommand } from './commands/pull';
import { registerServeCommand } from './commands/serve';
import { reportCommandError } from './errors';
import { followRankZero } from './follow-rank';
import { PluginLoadError, loadPluginsForCommand } from './plugins';

// Read at run time, not imported: package.json sits outside the compiled `src/` tree.
const { version } = require('../package.json') as { version: string };

/** The `kiln` command and its subcommands; every one answers --help. */
export function createProgram(): Command {
  const program = new Command();
  program
    .name('kiln')
    .description('Compile Hugging Face language models into inference engines and run them.')
    .version(version)
    .showHelpAfterError('(add --help for usage)')
    // Architectures from installed plugin packages, before any command reads a model.
    .hook('preAction', (_program, command) => loadPluginsForCommand(command.name()));
  registerConvertCommand(program);
  registerExportGgufCommand(program);
  registerBuildCommand(program);
  registerGenerateCommand(program);
  registerBenchCommand(program);
  registerServeCommand(program);
  registerChatCommand(program);
  registerPullCommand(program);
  registerCacheCommand(program);
  return program;
}

/** Runs the command line `argv` (as process.argv: node, script, arguments...). */
export async function main(argv: readonly string[] = process.argv): Promise<void> {
  // Under mpirun, ranks other than 0 of a tensor/pipeline-parallel engine follow rank 0 silently.
  try {
    if (await followRankZero(argv)) return;
  } catch (error) {
    reportCommandError(argv[2] ?? 'kiln', error);
    return;
  }
  try {
    await createProgram().parseAsync(argv as string[]);
  } catch (error) {
    if (!(error instanceof PluginLoadError)) throw error;
    reportCommandError(error.command, error);
  }
}
