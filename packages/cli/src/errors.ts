/**
 * An error meant for the person at the terminal: `main` prints `kiln <command>: <message>` to stderr
 * (no stack trace) and exits with `exitCode`. Anything else that escapes a command is a bug and may be
 * printed with its stack.
 */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/**
 * Prints a command's failure as `kiln <command>: <message>` on stderr and sets a non-zero exit code,
 * without calling process.exit (so pending writes flush and in-process tests can look at the result).
 */
export function reportCommandError(command: string, error: unknown): void {
  const message =
    typeof (error as Error | undefined)?.message === 'string' ? (error as Error).message : String(error);
  process.stderr.write(`kiln ${command}: ${message}\n`);
  process.exitCode = error instanceof CliError ? error.exitCode : 1;
}
