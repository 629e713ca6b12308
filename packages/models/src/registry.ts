import type { ArchitectureDefinition, BaseModelConfig } from './types';

/** A config.json that cannot be used: names the file and the key (or value) at fault. */
export class ConfigError extends Error {
  constructor(
    readonly file: string,
    readonly key: string,
    detail: string,
  ) {
    super(`${file}: ${key}: ${detail}`);
    this.name = 'ConfigError';
  }
}

/** An HF `architectures[0]` that no registered architecture handles. */
export class UnsupportedArchitectureError extends Error {
  constructor(
    readonly architecture: string,
    readonly supported: string[],
    file?: string,
  ) {
    super(
      `${file ? `${file}: ` : ''}unsupported architecture "${architecture}". ` +
        `Supported architectures: ${supported.join(', ')}`,
    );
    this.name = 'UnsupportedArchitectureError';
  }
}

const architectures = new Map<string, ArchitectureDefinition<BaseModelConfig>>();

/**
 * Adds an architecture. Outside packages call this when they are imported; registering a name twice
 * replaces the earlier definition only with `{ override: true }`.
 */
export function registerArchitecture<M extends BaseModelConfig>(
  definition: ArchitectureDefinition<M>,
  options: { override?: boolean } = {},
): void {
  if (architectures.has(definition.name) && !options.override) {
    throw new Error(`architecture "${definition.name}" is already registered`);
  }
  architectures.set(definition.name, definition as unknown as ArchitectureDefinition<BaseModelConfig>);
}

export function listArchitectures(): string[] {
  return [...architectures.keys()].sort();
}

/** The definition for an HF class name; throws UnsupportedArchitectureError listing the supported ones. */
export function getArchitecture(name: string, file?: string): ArchitectureDefinition<BaseModelConfig> {
  const definition = architectures.get(name);
  if (!definition) throw new UnsupportedArchitectureError(name, listArchitectures(), file);
  return definition;
}
