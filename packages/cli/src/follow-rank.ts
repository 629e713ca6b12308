// `kiln generate | serve | bench --engine <tp/pp engine>` under `mpirun -n <ranks>`: rank 0 runs the
// command as usual (the executor, the server, the output); every other rank loads its own engine file
// and follows rank 0's schedule (Engine.follow) until rank 0's engine is disposed, printing nothing.
// Launched without mpirun (or alone), nothing here touches MPI or the addon.
import { loadNative } from '@kiln/native';
import { Engine } from '@kiln/runtime';
import { parsePositiveInteger } from './commands/build';
import { CliError } from './errors';

/** Environment variables by which Open MPI, PMIx and MPICH's Hydra give a process its rank. */
const LAUNCHER_RANK_VARIABLES = ['OMPI_COMM_WORLD_RANK', 'PMIX_RANK', 'PMI_RANK'];

/** The value of `--name <value>` or `--name=<value>` in argv, if given. */
function flagValue(argv: readonly string[], name: string): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === name) return argv[i + 1];
    if (argv[i].startsWith(`${name}=`)) return argv[i].slice(name.length + 1);
  }
  return undefined;
}

/**
 * On ranks other than 0 of an mpirun world, follows rank 0 and returns true once it is done; returns
 * false everywhere else (the command runs normally). Throws a CliError when the command line gives no
 * `--engine` for the followers to load.
 */
export async function followRankZero(argv: readonly string[]): Promise<boolean> {
  if (!LAUNCHER_RANK_VARIABLES.some((name) => process.env[name] !== undefined)) return false;
  const world = loadNative().worldInfo();
  if (world.size <= 1 || world.rank === 0) return false;
  const command = argv[2];
  if (command !== 'generate' && command !== 'serve' && command !== 'bench') {
    throw new CliError(`rank ${world.rank}: under mpirun only generate, serve and bench run (with --engine <tensor/pipeline-parallel engine>)`);
  }
  const engineDir = flagValue(argv, '--engine');
  if (engineDir === undefined) {
    throw new CliError(`rank ${world.rank}: under mpirun, give --engine <engine-dir> of a tensor/pipeline-parallel engine (kiln convert --tp-size/--pp-size, kiln build)`);
  }
  // mpirun forwards SIGINT/SIGTERM to every rank; rank 0 decides how to stop (kiln serve lets requests
  // in flight finish), and its engine's disposal tells this rank. Ending here first would cut its steps.
  const ignore = () => {};
  process.on('SIGINT', ignore);
  process.on('SIGTERM', ignore);
  const threads = flagValue(argv, '--threads');
  const engine = await Engine.load(engineDir, threads === undefined ? {} : { numThreads: parsePositiveInteger('--threads', threads) });
  try {
    await engine.follow();
  } finally {
    await engine.dispose();
  }
  return true;
}
