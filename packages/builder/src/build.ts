import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { CHECKPOINT_CONFIG_FILE, TOKENIZER_FILES, createTempDirBeside, readKilnCheckpoint } from '@kiln/convert';
import { getArchitecture } from '@kiln/models';
import { loadNative } from '@kiln/native';
import { resolveBuildConfig } from './build-config';
import { ENGINE_FORMAT_VERSION, assembleEngine } from './engine-header';
import { Graph } from './graph';
import { lowerGraph } from './lower';
import { activationDTypes } from './activation-dtypes';
import { planMemory } from './memory-plan';
import { runPasses } from './passes';
import type { BuildOptions, BuildResult } from './types';

/** Bumped whenever the builder's output for the same inputs changes, so caches miss. */
export const BUILDER_VERSION = '0.3.0';
export const ENGINE_DIR_FORMAT = 'kiln-engine-dir';
export const ENGINE_FILE = 'rank0.engine';

/**
 * Compiles a Kiln checkpoint into an engine directory for the CPU or a CUDA GPU (`config.target`):
 * network from the model zoo, graph passes, lowering to the engine's ops, memory planning, weight
 * packing in `config.dtype`. The directory appears whole or not at all.
 * An existing engine built from the same checkpoint and config (same build hash) is reused.
 */
export async function buildEngine(options: BuildOptions): Promise<BuildResult> {
  const report = options.onProgress ?? (() => {});
  report({ stage: 'load', message: `reading checkpoint ${options.checkpointDir}` });
  const { config: checkpoint, weightsFile } = await readKilnCheckpoint(options.checkpointDir);
  const architecture = getArchitecture(checkpoint.architecture);
  const buildConfig = resolveBuildConfig(options.config, checkpoint.model as never, checkpoint.dtype);
  const outputDir = path.resolve(options.outputDir);
  const buildHash = await computeBuildHash(options.checkpointDir, weightsFile, buildConfig);

  if (!options.force && (await isSameEngine(outputDir, buildHash))) {
    return { engineDir: outputDir, cached: true, buildHash, config: buildConfig };
  }

  const graph = new Graph(architecture.buildNetwork(checkpoint.model as never).toJSON());
  const passes = runPasses(graph);
  report({ stage: 'passes', message: passes.map((p) => `${p.pass}: ${p.changes}`).join(', ') });

  // The native writer casts each checkpoint tensor to the dtype its entry asks for.
  const program = lowerGraph(graph, buildConfig.dtype);
  report({ stage: 'lower', message: `${program.ops.length} ops, ${program.weights.length} weights` });

  const logits = graph.outputs.logits;
  if (logits === undefined) throw new Error(`${checkpoint.architecture}: the network has no "logits" output`);
  const dtypes = buildConfig.target === 'cuda' ? activationDTypes(graph, program, buildConfig.dtype) : new Map();
  const plan = planMemory(
    graph,
    program,
    {
      tokens: buildConfig.maxNumTokens,
      logitRows: buildConfig.gatherContextLogits ? buildConfig.maxNumTokens : buildConfig.maxBatchSize,
    },
    dtypes,
  );
  report({ stage: 'plan', message: `activation arena ${plan.arenaBytes} bytes (${plan.unsharedBytes} without reuse)` });

  const { header, weights } = assembleEngine(program, plan, logits, buildConfig, checkpoint, weightsFile);

  // Removed if the process exits midway (the CLI turns SIGINT/SIGTERM into an exit); one left by a
  // killed build of the same output is removed here (see createTempDirBeside).
  const temp = await createTempDirBeside(outputDir);
  const tempDir = temp.dir;
  try {
    report({ stage: 'write', message: `packing ${weights.length} weights into ${ENGINE_FILE}` });
    const written = await loadNative().writeEngine({ path: path.join(tempDir, ENGINE_FILE), header: JSON.stringify(header), weights });
    const engineConfig = {
      format: ENGINE_DIR_FORMAT,
      formatVersion: ENGINE_FORMAT_VERSION,
      builderVersion: BUILDER_VERSION,
      target: header.target,
      buildConfig,
      buildHash,
      passes,
      checkpoint,
      engineFiles: [ENGINE_FILE],
      checksums: { [ENGINE_FILE]: written.checksum },
    };
    await fs.writeFile(path.join(tempDir, 'config.json'), `${JSON.stringify(engineConfig, null, 2)}\n`);
    for (const file of TOKENIZER_FILES) {
      await fs.copyFile(path.join(options.checkpointDir, file), path.join(tempDir, file)).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT') throw error;
      });
    }
    await replaceDir(tempDir, outputDir);
  } catch (error) {
    await fs.rm(tempDir, { recursive: true, force: true });
    throw error;
  } finally {
    temp.release();
  }
  return { engineDir: outputDir, cached: false, buildHash, config: buildConfig };
}

/**
 * The cache key: builder and format versions, the checkpoint's config, the weights file's identity
 * (size and modification time: hashing gigabytes of weights on every build would cost more than the
 * build) and the build config.
 */
async function computeBuildHash(checkpointDir: string, weightsFile: string, buildConfig: object): Promise<string> {
  const [configText, weightsStat] = await Promise.all([
    fs.readFile(path.join(checkpointDir, CHECKPOINT_CONFIG_FILE), 'utf8'),
    fs.stat(weightsFile),
  ]);
  return createHash('sha256')
    .update(JSON.stringify({ BUILDER_VERSION, ENGINE_FORMAT_VERSION, configText, size: weightsStat.size, mtime: weightsStat.mtimeMs, buildConfig }))
    .digest('hex');
}

async function isSameEngine(dir: string, buildHash: string): Promise<boolean> {
  try {
    const config = JSON.parse(await fs.readFile(path.join(dir, 'config.json'), 'utf8')) as { buildHash?: unknown };
    await fs.access(path.join(dir, ENGINE_FILE));
    return config.buildHash === buildHash;
  } catch {
    return false;
  }
}

/** Puts `tempDir` at `target`: an old target is moved aside first and removed after. */
async function replaceDir(tempDir: string, target: string): Promise<void> {
  const aside = `${target}.old-${process.pid}-${randomBytes(4).toString('hex')}`;
  const hadOld = await fs.rename(target, aside).then(
    () => true,
    (error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return false;
      throw error;
    },
  );
  await fs.rename(tempDir, target);
  if (hadOld) await fs.rm(aside, { recursive: true, force: true });
}
