import type { Command } from 'commander';
import { cleanEngineCache, defaultCacheDir, listEngineCache } from '@kiln/runtime';
import { CliError, reportCommandError } from '../errors';
import { formatBytes } from '../progress-line';

const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** `30d`, `12h`, `90m`, `2w`, `45s` as milliseconds; a CliError naming the flag otherwise. */
export function parseDuration(flag: string, value: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$/.exec(value);
  if (!match) throw new CliError(`${flag}: expected a duration such as 30d, 12h, 90m, 2w or 45s, got ${JSON.stringify(value)}`);
  return Number(match[1]) * UNITS[match[2]];
}

function age(date: Date): string {
  const ms = Date.now() - date.getTime();
  for (const [unit, size] of [['d', UNITS.d], ['h', UNITS.h], ['m', UNITS.m]] as const) if (ms >= size) return `${Math.floor(ms / size)}${unit} ago`;
  return 'just now';
}

async function list(): Promise<void> {
  const cacheDir = defaultCacheDir();
  const entries = await listEngineCache({ cacheDir });
  if (entries.length === 0) {
    process.stdout.write(`no engines in ${cacheDir}\n`);
    return;
  }
  const rows = entries.map((e) => [e.key.slice(0, 12), formatBytes(e.bytes), age(e.lastUsedAt), e.buildConfig ? `${e.buildConfig.target} ${e.buildConfig.dtype}` : '?', e.source]);
  const header = ['ENGINE', 'SIZE', 'LAST USED', 'TARGET', 'SOURCE'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join('  ');
  process.stdout.write(`${[line(header), ...rows.map(line)].join('\n')}\n`);
  const total = entries.reduce((sum, e) => sum + e.bytes, 0);
  process.stdout.write(`${entries.length} engine${entries.length === 1 ? '' : 's'}, ${formatBytes(total)} in ${cacheDir}\n`);
}

async function clean(options: { olderThan?: string }): Promise<void> {
  const olderThanMs = options.olderThan === undefined ? undefined : parseDuration('--older-than', options.olderThan);
  const cacheDir = defaultCacheDir();
  const { removed, bytes } = await cleanEngineCache({ cacheDir, olderThanMs });
  process.stdout.write(`removed ${removed.length} engine${removed.length === 1 ? '' : 's'}, ${formatBytes(bytes)} freed in ${cacheDir}\n`);
}

export function registerCacheCommand(program: Command): void {
  const cache = program
    .command('cache')
    .description('Manage the engine cache that --model and LLM.load fill ($KILN_CACHE_DIR, else the platform cache folder, e.g. ~/.cache/kiln).');
  cache
    .command('list')
    .description('list the cached engines: size, last use, target and dtype, what each was built from')
    .action(async () => {
      try {
        await list();
      } catch (error) {
        reportCommandError('cache list', error);
      }
    });
  cache
    .command('clean')
    .description('remove cached engines (all, or those unused for --older-than) and folders left by interrupted builds')
    .option('--older-than <duration>', 'only engines not used for this long: 30d, 12h, 90m, 2w, 45s (default: every engine)')
    .action(async (options: { olderThan?: string }) => {
      try {
        await clean(options);
      } catch (error) {
        reportCommandError('cache clean', error);
      }
    });
}
