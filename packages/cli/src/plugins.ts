// Outside architectures: before convert, build and generate, the CLI requires every installed package
// that declares `"kiln": { "architectures": [...] }` (see @kiln/models' loadArchitecturePlugins and
// packages/models/ADDING_AN_ARCHITECTURE.md), looking around the working folder and the CLI's own
// installation (so a plugin installed next to a global kiln is found too).
import { loadArchitecturePlugins } from '@kiln/models';

/** A plugin that failed to load, reported as the failure of the command that needed it. */
export class PluginLoadError extends Error {
  constructor(
    readonly command: string,
    override readonly cause: unknown,
  ) {
    super(cause instanceof Error ? cause.message : String(cause));
    this.name = 'PluginLoadError';
  }
}

export function loadPluginsForCommand(command: string, cwd: string = process.cwd()): void {
  try {
    loadArchitecturePlugins(cwd, require.resolve.paths('@kiln/models') ?? []);
  } catch (error) {
    throw new PluginLoadError(command, error);
  }
}
