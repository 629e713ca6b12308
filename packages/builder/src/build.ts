import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { CHECKPOINT_CONFIG_FILE, TOKENIZER_FILES, createTempDirBeside, parallelFacts, readKilnCheckpoint } from '@kiln/convert';
import { getArchitecture } from '@kiln/models';
import { loadNative, type QuantizationErrorReport } from '@kiln/native';
import { resolveBuildConfig } from './build-config';
import { ENGINE_FORMAT_VERSION, assembleEngine } from './engine-header';
import { Graph } from './graph';
import { lowerGraph } from './lower';
import { fuseLinearNeighbours } from './lower/fuse-linear-neighbours';
import { activationDTypes } from './activation-dtypes';
import { planMemory } from './memory-plan';
import { runPasses, type PassReport } from './passes';
import { partitionForRank } from './parallel';
import type { BuildOptions, BuildResult } from './types';

/** Bumped whenever the builder's output for the same inputs changes, so caches miss. */
export const BUILDER_VERSION = '0.5.0'; // 0.5.0: cuda engines' fused linears (decision 0018)
export const ENGINE_DIR_FORMAT = 'kiln-engine-dir';
export const ENGINE_FILE = 'rank0.engine';

/** One rank's engine file, assembled and waiting to be written. */
interface RankEngine {
  file: string;
  passes: PassReport[];
  header: ReturnType<typeof assembleEngine>['header'];
  weights: ReturnType<typeof assembleEngine>['weights'];
}

/**
 * Compiles a Kiln checkpoint into an engine directory for the CPU or a CUDA GPU (`config.target`):
 * network from the model zoo, graph passes, lowering to the engine's ops, memory planning, weight
 * packing in `config.dtype`. A tensor/pipeline-parallel checkpoint gives one engine file per rank
 * (rank<N>.engine, each with the header's `mapping`), built from that rank's part of the network
 * (parallel.ts). The directory appears whole or not at all.
 * An existing engine built from the same checkpoint and config (same build hash) is reused.
 */
export async function buildEngine(options: BuildOptions): Promise<BuildResult> {
  const report = options.onProgress ?? (() => {});
  report({ stage: 'load', message: `reading checkpoint ${options.checkpointDir}` });
  const { config: checkpoint, weightsFile, weightsFiles } = await readKilnCheckpoint(options.checkpointDir);
  const architecture = getArchitecture(checkpoint.architecture);
  const buildConfig = resolveBuildConfig(options.config, checkpoint.model as never, checkpoint.dtype);
  const outputDir = path.resolve(options.outputDir);
  const buildHash = await computeBuildHash(options.checkpointDir, weightsFile, buildConfig, weightsFiles.slice(1));

  if (!options.force && (await isSameEngine(outputDir, buildHash))) {
    const quantization = await readQuantizationReport(outputDir);
    return { engineDir: outputDir, cached: true, buildHash, config: buildConfig, ...(quantization ? { quantization } : {}) };
  }

  const network = architecture.buildNetwork(checkpoint.model as never).toJSON();
  const { worldSize, tpSize, ppSize } = checkpoint.mapping;
  const facts = worldSize > 1 ? parallelFacts(network) : undefined;
  const ranks: RankEngine[] = [];
  for (let rank = 0; rank < worldSize; rank++) {
    const graph = new Graph(network);
    const mapping = facts ? { tpSize, ppSize, rank } : undefined;
    if (facts && mapping) partitionForRank(graph, facts, mapping);
    const where = worldSize > 1 ? `rank ${rank}: ` : '';
    const passes = runPasses(graph);
    report({ stage: 'passes', message: where + passes.map((p) => `${p.pass}: ${p.changes}`).join(', ') });

    // The native writer casts each checkpoint tensor to the dtype its entry asks for.
    const program = lowerGraph(
      graph,
      buildConfig.dtype,
      buildConfig.target === 'cpu'
        ? { quantization: buildConfig.quantization, groupSize: buildConfig.groupSize, bf16LinearInputs: buildConfig.bf16LinearInputs }
        : { quantization: buildConfig.quantization, groupSize: buildConfig.groupSize },
    );
    if (buildConfig.target === 'cuda') {
      passes.push({ pass: 'fuse-linear-neighbours', changes: fuseLinearNeighbours(program, graph) });
    }
    report({ stage: 'lower', message: `${where}${program.ops.length} ops, ${program.weights.length} weights` });

    // Only rank 0 samples: other ranks of a pipeline may compute no logits (parallel.ts).
    const logits = graph.outputs.logits;
    if (logits === undefined && rank === 0) throw new Error(`${checkpoint.architecture}: the network has no "logits" output`);
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
    report({ stage: 'plan', message: `${where}activation arena ${plan.arenaBytes} bytes (${plan.unsharedBytes} without reuse)` });
    const assembled = assembleEngine(program, plan, logits, buildConfig, checkpoint, weightsFiles[rank], mapping);
    ranks.push({ file: rank === 0 ? ENGINE_FILE : `rank${rank}.engine`, passes, ...assembled });
  }

  // Removed if the process exits midway (the CLI turns SIGINT/SIGTERM into an exit); one left by a
  // killed build of the same output is removed here (see createTempDirBeside).
  const temp = await createTempDirBeside(outputDir);
  const quantization: QuantizationErrorReport[] = [];
  // int4 builds also name the matrices kept at int8 (the first layer's and the LM head: decision 0014).
  const int8Weights =
    buildConfig.quantization === 'int4'
      ? [...new Set(ranks.flatMap(({ weights }) => weights.filter((w) => w.dtype === 'int8').map((w) => w.name)))]
      : [];
  const tempDir = temp.dir;
  try {
    const checksums: Record<string, string> = {};
    for (const { file, header, weights } of ranks) {
      report({ stage: 'write', message: `packing ${weights.length} weights into ${file}` });
      const written = await loadNative().writeEngine({ path: path.join(tempDir, file), header: JSON.stringify(header), weights });
      checksums[file] = written.checksum;
      quantization.push(...written.quantization.map((q) => (ranks.length > 1 ? { ...q, name: `${file}: ${q.name}` } : q)));
    }
    // Each quantized matrix's error against its float weights, kept beside the engine.
    if (quantization.length > 0) {
      // The method names the format (int4's with its group size: decision 0014).
      const groupSize = buildConfig.quantization === 'int4' ? { groupSize: buildConfig.groupSize, int8Weights } : {};
      await fs.writeFile(
        path.join(tempDir, QUANTIZATION_REPORT_FILE),
        `${JSON.stringify({ method: QUANTIZATION_METHODS[buildConfig.quantization ?? 'int8'], ...groupSize, weights: quantization }, null, 2)}\n`,
      );
    }
    const engineConfig = {
      format: ENGINE_DIR_FORMAT,
      formatVersion: ENGINE_FORMAT_VERSION,
      builderVersion: BUILDER_VERSION,
      target: ranks[0].header.target,
      buildConfig,
      buildHash,
      passes: ranks[0].passes,
      checkpoint,
      engineFiles: ranks.map((r) => r.file),
      checksums,
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
  return {
    engineDir: outputDir,
    cached: false,
    buildHash,
    config: buildConfig,
    ...(quantization.length > 0 ? { quantization } : {}),
    ...(int8Weights.length > 0 ? { int8Weights } : {}),
  };
}

/** quantization.json's `method` for each build config `quantization`. */
const QUANTIZATION_METHODS = {
  int8: 'int8 per-channel',
  int4: 'int4 per-group',
  fp8: 'float8_e4m3fn per-tensor weights (activations per-row dynamic at run time)',
  q8_0: "llama.cpp's Q8_0 blocks of 32 (activations quantized to the same blocks at run time)",
} as const;

/** The per-weight error report of a quantized engine (written by the build), or undefined. */
export const QUANTIZATION_REPORT_FILE = 'quantization.json';
async function readQuantizationReport(engineDir: string): Promise<QuantizationErrorReport[] | undefined> {
  try {
    return (JSON.parse(await fs.readFile(path.join(engineDir, QUANTIZATION_REPORT_FILE), 'utf8')) as { weights: QuantizationErrorReport[] }).weights;
  } catch {
    return undefined;
  }
}

/**
 * The cache key: builder and format versions, the checkpoint's config, the weights file's identity
 * (size and modification time: hashing gigabytes of weights on every build would cost more than the
 * build) and the build config.
 */
async function computeBuildHash(checkpointDir: string, weightsFile: string, buildConfig: object, otherRanks: string[]): Promise<string> {
  const [configText, weightsStat] = await Promise.all([
    fs.readFile(path.join(checkpointDir, CHECKPOINT_CONFIG_FILE), 'utf8'),
    fs.stat(weightsFile),
  ]);
  // Other ranks' files (tp/pp checkpoints) count too; a single-rank key is what it always was.
  const ranks = await Promise.all(otherRanks.map(async (file) => {
    const stat = await fs.stat(file);
    return { size: stat.size, mtime: stat.mtimeMs };
  }));
  return createHash('sha256')
    .update(JSON.stringify({ BUILDER_VERSION, ENGINE_FORMAT_VERSION, configText, size: weightsStat.size, mtime: weightsStat.mtimeMs, buildConfig, ...(ranks.length > 0 ? { ranks } : {}) }))
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
