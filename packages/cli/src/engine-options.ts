// Flags that several commands share: the build target of an engine (`kiln build`, and the engines that
// generate / serve / bench build for --model), the KV cache's size when an engine is loaded, and the
// --verbose start-up line.
import type { Command } from 'commander';
import type { BuildConfig } from '@kiln/builder';
import { CHECKPOINT_DTYPES, isCheckpointDType } from '@kiln/convert';
import type { EngineInfo, EngineLoadOptions } from '@kiln/runtime';
import { CliError } from './errors';
import { parsePositiveInteger } from './commands/build';

/** The target flags as commander hands them over (strings, unparsed). */
export interface TargetFlags {
  target?: string;
  dtype?: string;
  computeCapability?: string;
}

/** The KV cache flags as commander hands them over. */
export interface KvCacheFlags {
  kvCacheFreeGpuMemoryFraction?: string;
  kvCacheBytes?: string;
}

const DTYPES = CHECKPOINT_DTYPES.join(', ');

/**
 * --target and --dtype (and, for `kiln build`, --compute-capability). `forModel`: the command builds an
 * engine only for --model (or the built-in model), so the help says so.
 */
export function addTargetOptions(command: Command, { forModel }: { forModel: boolean }): Command {
  const prefix = forModel ? 'with --model: ' : '';
  command
    .option('--target <target>', `${prefix}where the engine runs: cpu or cuda (default cpu)`)
    .option('--dtype <dtype>', `${prefix}the engine's weight dtype, and on cuda its activation and KV cache dtype: ${DTYPES} (default: the checkpoint's)`);
  if (!forModel) {
    command.option('--compute-capability <x.y>', 'with --target cuda: the GPU compute capability to build for, e.g. 9.0 (default: GPU 0\'s, else 9.0)');
  }
  return command;
}

/** The target flags as build settings (only those given), or a CliError naming the flag. */
export function targetConfigFromFlags(flags: TargetFlags): Partial<BuildConfig> {
  const { target, dtype, computeCapability } = flags;
  if (target !== undefined && target !== 'cpu' && target !== 'cuda') throw new CliError(`--target: expected cpu or cuda, got ${JSON.stringify(target)}`);
  if (dtype !== undefined && !isCheckpointDType(dtype)) throw new CliError(`--dtype: expected one of ${DTYPES}, got ${JSON.stringify(dtype)}`);
  const dtypeConfig = dtype === undefined ? {} : { dtype };
  if (target !== 'cuda') {
    if (computeCapability !== undefined) throw new CliError('--compute-capability: applies to --target cuda only');
    return { ...(target === undefined ? {} : { target }), ...dtypeConfig };
  }
  if (computeCapability !== undefined && !/^\d+\.\d+$/.test(computeCapability)) {
    throw new CliError(`--compute-capability: expected major.minor, e.g. 9.0, got ${JSON.stringify(computeCapability)}`);
  }
  return { target, ...dtypeConfig, ...(computeCapability === undefined ? {} : { computeCapability }) };
}

/**
 * For commands that take `--engine` or build one for `--model`: the target flags, refused with --engine
 * (an engine's target was fixed when it was built).
 */
export function modelTargetConfig(flags: TargetFlags & { engine?: string }): Partial<BuildConfig> {
  if (flags.engine !== undefined) {
    const given = (['target', 'dtype'] as const).filter((name) => flags[name] !== undefined);
    if (given.length > 0) {
      throw new CliError(`--${given[0]}: applies to --model only; an --engine runs on the target it was built for (\`kiln build --${given[0]}\`)`);
    }
  }
  return targetConfigFromFlags(flags);
}

/** --kv-cache-free-gpu-memory-fraction and --kv-cache-bytes, for commands that load an engine. */
export function addKvCacheOptions(command: Command): Command {
  return command
    .option(
      '--kv-cache-free-gpu-memory-fraction <f>',
      'KV cache size as a fraction in (0, 1] of the memory free once the engine is loaded: GPU memory for a cuda engine, ' +
        'available host memory for a cpu engine (default: room for max-batch-size x max-seq-len tokens, on cuda at most 0.9 of the free GPU memory)',
    )
    .option('--kv-cache-bytes <n>', "KV cache size in bytes, in the engine's activation dtype (default: as above); with both flags the smaller size wins");
}

/** The KV cache flags as EngineLoadOptions (only those given), or a CliError naming the flag. */
export function kvCacheOptionsFromFlags(flags: KvCacheFlags): Pick<EngineLoadOptions, 'kvCacheMemoryFraction' | 'kvCacheBytes'> {
  const options: Pick<EngineLoadOptions, 'kvCacheMemoryFraction' | 'kvCacheBytes'> = {};
  const fraction = flags.kvCacheFreeGpuMemoryFraction;
  if (fraction !== undefined) {
    const value = fraction.trim() === '' ? NaN : Number(fraction);
    if (!(value > 0 && value <= 1)) throw new CliError(`--kv-cache-free-gpu-memory-fraction: expected a number in (0, 1], got ${JSON.stringify(fraction)}`);
    options.kvCacheMemoryFraction = value;
  }
  if (flags.kvCacheBytes !== undefined) options.kvCacheBytes = parsePositiveInteger('--kv-cache-bytes', flags.kvCacheBytes);
  return options;
}

export const VERBOSE_OPTION_HELP = 'print where the engine runs and its memory (weights, KV cache) on stderr once it is loaded';

const mebibytes = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/** The --verbose start-up line: `engine: cuda on NVIDIA H200 (...), weights 14.2 MiB, KV cache 96.0 MiB = 6144 tokens`. */
export function describeEngine(info: EngineInfo): string {
  return (
    `engine: ${info.backend} on ${info.device}, weights ${mebibytes(info.weightBytes)}, ` +
    `KV cache ${mebibytes(info.kvCacheBytes)} = ${info.kvCacheTokens} tokens`
  );
}
