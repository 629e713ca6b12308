// Splits a single-rank Kiln checkpoint into one weights file per rank (`rank<N>.safetensors`) for a
// tensor- and pipeline-parallel mapping; the rules are in ./parallel.ts. `kiln convert --tp-size N
// --pp-size M` converts into a temporary single-rank checkpoint and shards it here.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { getArchitecture } from '@kiln/models';
import { loadNative, type TensorWriteSpec } from '@kiln/native';
import { CHECKPOINT_CONFIG_FILE, CHECKPOINT_FORMAT, TOKENIZER_FILES, readKilnCheckpoint, rankWeightsFile } from './checkpoint';
import { ConvertError } from './errors';
import { assertReplaceable, writeDirAtomically } from './output-dir';
import { MappingError, checkMapping, parallelFacts, stageOf, tensorShard } from './parallel';

export interface ShardOptions {
  /** A single-rank Kiln checkpoint (what `convertCheckpoint` writes). */
  checkpointDir: string;
  /** The sharded checkpoint to create; replaced atomically when it already holds a checkpoint. */
  outputDir: string;
  /** Tensor-parallel ranks per pipeline stage. Default 1. */
  tpSize?: number;
  /** Pipeline stages. Default 1. */
  ppSize?: number;
}

/** The canonical name of the LM head's weight in a sharded checkpoint (tied models get a copy). */
export const LM_HEAD_WEIGHT = 'lm_head.weight';

/**
 * Writes `outputDir` with the same config (its mapping set) and tokenizer files as `checkpointDir`, and
 * rank r's part of every tensor in rank<r>.safetensors. A mapping that does not fit the model (heads,
 * KV heads or MLP width not divisible by tp, more stages than layers) fails before anything is written,
 * naming the size at fault.
 */
export async function shardCheckpoint(options: ShardOptions): Promise<{ outputDir: string; worldSize: number }> {
  const tpSize = options.tpSize ?? 1;
  const ppSize = options.ppSize ?? 1;
  const source = await readKilnCheckpoint(options.checkpointDir);
  const configFile = path.join(path.resolve(options.checkpointDir), CHECKPOINT_CONFIG_FILE);
  if (source.config.mapping.worldSize !== 1) throw new ConvertError(configFile, 'mapping: the checkpoint is already sharded');
  const network = getArchitecture(source.config.architecture).buildNetwork(source.config.model as never).toJSON();
  const facts = parallelFacts(network);
  try {
    checkMapping({ tpSize, ppSize }, facts, network);
  } catch (error) {
    if (error instanceof MappingError) throw new ConvertError(configFile, `tp ${tpSize} x pp ${ppSize} does not fit this model: ${error.message}`);
    throw error;
  }
  const outputDir = path.resolve(options.outputDir);
  await assertReplaceable(outputDir);
  const native = loadNative();
  const info = await native.readSafetensors(source.weightsFile);
  const shapes = new Map(info.tensors.map((t) => [t.name, t.shape]));
  const dtype = source.config.dtype;

  // The LM head's weight: its own tensor, or the embedding of a tied model (copied under lm_head.weight,
  // so that the last stage can hold it without the embedding, and split by vocabulary).
  const logitsNode = network.nodes.find((node) => node.outputs.includes(network.outputs.logits) && node.op === 'linear')
    ?? network.nodes.find((node) => node.op === 'linear' && network.nodes.some((n) => n.inputs.includes(node.outputs[0]) && n.outputs.includes(network.outputs.logits)));
  const lmHeadValue = logitsNode ? network.values.find((v) => v.id === logitsNode.inputs[1]) : undefined;
  const lmHeadSource = lmHeadValue?.name;
  if (!lmHeadSource) throw new ConvertError(configFile, 'the network has no linear LM head to split');

  const config = { ...source.config, mapping: { worldSize: tpSize * ppSize, tpSize, ppSize } };
  await writeDirAtomically(outputDir, async (tmpDir) => {
    for (let rank = 0; rank < tpSize * ppSize; rank++) {
      const tpRank = rank % tpSize;
      const ppRank = Math.floor(rank / tpSize);
      const transposedFile = path.join(tmpDir, `rank${rank}.transposed.safetensors`);
      const transposed: TensorWriteSpec[] = [];
      const tensors: TensorWriteSpec[] = [];
      const add = (name: string, from: string) => {
        const shape = shapes.get(from);
        if (!shape) throw new ConvertError(source.weightsFile, `tensor ${from} not found`);
        const shard = tensorShard(name, shape, facts, tpSize, tpRank);
        if (!shard) return;
        const cols = shard.ranges.filter((r) => r.dim === 1);
        if (cols.length === 0) {
          const sources = shard.ranges.length === 0
            ? [{ file: source.weightsFile, tensor: from }]
            : shard.ranges.map((r) => ({ file: source.weightsFile, tensor: from, rowStart: r.start, rowCount: r.count }));
          tensors.push({ name, dtype, shape: shard.shape, sources });
          return;
        }
        // A column range: the writer slices rows only, so the columns are taken as rows of the
        // transpose (into a scratch file), then transposed back.
        const [{ start, count }] = cols;
        transposed.push({ name, dtype, shape: [count, shape[0]], sources: [{ file: source.weightsFile, tensor: from, transpose: true, rowStart: start, rowCount: count }] });
        tensors.push({ name, dtype, shape: shard.shape, sources: [{ file: transposedFile, tensor: name, transpose: true }] });
      };
      for (const value of network.values) {
        if (value.kind !== 'parameter' || !value.name) continue;
        const isLmHead = value.name === lmHeadSource;
        // The tied embedding stays where the embedding is read (the first stage) under its own name.
        const readsElsewhere = network.nodes.some((node) => node.inputs.includes(value.id) && node !== logitsNode);
        if (!isLmHead || readsElsewhere) {
          if (stageOf(value.name, facts.numLayers, ppSize) === ppRank) add(value.name, value.name);
        }
        if (isLmHead && ppRank === ppSize - 1) add(LM_HEAD_WEIGHT, value.name);
      }
      if (transposed.length > 0) await native.writeSafetensors({ path: transposedFile, metadata: { format: CHECKPOINT_FORMAT }, tensors: transposed });
      await native.writeSafetensors({ path: path.join(tmpDir, rankWeightsFile(rank)), metadata: { format: CHECKPOINT_FORMAT }, tensors });
      if (transposed.length > 0) await fs.rm(transposedFile, { force: true });
    }
    await fs.writeFile(path.join(tmpDir, CHECKPOINT_CONFIG_FILE), `${JSON.stringify(config, null, 2)}\n`);
    for (const file of TOKENIZER_FILES) {
      await fs.copyFile(path.join(path.resolve(options.checkpointDir), file), path.join(tmpDir, file)).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT') throw error;
      });
    }
  });
  return { outputDir, worldSize: tpSize * ppSize };
}
