import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { getArchitecture, type CheckpointDType, type KilnCheckpointConfig } from '@kiln/models';
import { loadNative } from '@kiln/native';
import {
  CHECKPOINT_CONFIG_FILE,
  CHECKPOINT_FORMAT,
  CHECKPOINT_FORMAT_VERSION,
  CHECKPOINT_WEIGHTS_FILE,
  TOKENIZER_FILES,
} from './checkpoint';
import { ConvertError } from './errors';
import { CHECKPOINT_DTYPES, defaultDType, isCheckpointDType, readGenerationIds, readHfConfig } from './hf-config';
import { isFile } from './json-file';
import { assertReplaceable, createTempDirBeside, writeDirAtomically } from './output-dir';
import { MappingError, checkMapping, parallelFacts } from './parallel';
import { shardCheckpoint } from './shard';
import { stageGgufAsHf } from './gguf/import';
import { planConversion } from './plan';
import { checkTokenizer } from './tokenizer-check';
import { readHfWeights } from './weights';

export interface ConvertProgress {
  /** Checkpoint tensors written so far. */
  done: number;
  total: number;
  /** The tensor being written (or the last one written, when done === total). */
  tensor: string;
}

export interface ConvertOptions {
  /**
   * A Hugging Face model folder: config.json, model.safetensors or a sharded index, tokenizer files.
   * Give exactly one of `modelDir` and `modelFile`.
   */
  modelDir?: string;
  /**
   * A GGUF file (llama.cpp's format; families in `GGUF_ARCHITECTURES`): its metadata becomes the config,
   * its tokenizer a tokenizer.json, its tensors are renamed, un-permuted and dequantized (default dtype:
   * `defaultGgufDType`). Give exactly one of `modelDir` and `modelFile`.
   */
  modelFile?: string;
  /** The Kiln checkpoint folder to create; replaced atomically when it already holds a checkpoint. */
  outputDir: string;
  /** Storage dtype. Default: the HF config's `dtype` / `torch_dtype` when Kiln supports it, else float32. */
  dtype?: CheckpointDType;
  /**
   * Convert weights that hold NaN or infinite values. Default false: they are refused, naming the
   * tensor (a model with them generates garbage, e.g. token 0 forever).
   */
  allowNonFinite?: boolean;
  /**
   * Tensor parallelism: ranks per pipeline stage, each holding its split of the weights (shard.ts). The
   * model's heads (and MLP width) must divide by it; KV heads are split when they divide, else each
   * rank keeps the one its query heads read. Default 1.
   */
  tpSize?: number;
  /** Pipeline parallelism: stages, each holding consecutive layers. At most the number of layers. Default 1. */
  ppSize?: number;
  onProgress?: (progress: ConvertProgress) => void;
}

export interface ConvertResult {
  outputDir: string;
  config: KilnCheckpointConfig;
  /** A GGUF import: the GGML types of the file's matrices, each once (e.g. ["Q8_0", "F32"]). */
  ggufMatrixTypes?: string[];
}

/**
 * Converts a Hugging Face checkpoint folder into a Kiln checkpoint: validates everything first (config,
 * shard index, every header, every tensor's presence, shape and dtype, no unexplained extra tensors), then
 * gathers, concatenates and casts the tensors natively into `rank0.safetensors`, writes the checkpoint's
 * config.json and copies the tokenizer files. The output folder appears complete or not at all.
 */
export async function convertCheckpoint(options: ConvertOptions): Promise<ConvertResult> {
  if ((options.tpSize ?? 1) !== 1 || (options.ppSize ?? 1) !== 1) return convertSharded(options);
  if (options.modelFile !== undefined) return convertGgufFile(options, options.modelFile);
  if (options.modelDir === undefined) throw new Error('convertCheckpoint: give modelDir or modelFile');
  const modelDir = path.resolve(options.modelDir);
  const outputDir = path.resolve(options.outputDir);
  if (options.dtype !== undefined && !isCheckpointDType(options.dtype)) {
    throw new Error(`dtype: expected one of ${CHECKPOINT_DTYPES.join(', ')}, got ${JSON.stringify(options.dtype)}`);
  }
  if (outputDir === modelDir) throw new ConvertError(outputDir, 'the output folder must not be the model folder');

  const hf = await readHfConfig(modelDir);
  const arch = getArchitecture(hf.architecture, hf.path);
  const modelConfig = arch.parseConfig(hf.json, hf.path);
  const generation = await readGenerationIds(modelDir, hf.json, hf.path);
  // The config's dtype is checked even when options.dtype overrides it: an unknown name means the
  // weights are not what the folder says.
  const declared = defaultDType(hf.json, hf.path);
  const dtype = options.dtype ?? declared;
  // Before the (possibly long) reading and writing: an output folder we would refuse to replace, and a
  // tokenizer that could not run the model.
  await assertReplaceable(outputDir);
  const vocabSize = (modelConfig as { vocabSize?: unknown }).vocabSize;
  await checkTokenizer(modelDir, typeof vocabSize === 'number' ? vocabSize : undefined);

  // The addon is loaded on first use: the folder, config and shard index are checked without it.
  const weights = await readHfWeights(modelDir, (file) => loadNative().readSafetensors(file));
  const tensors = planConversion({ arch, modelConfig, tensors: weights.tensors, dtype, modelDir });

  const config: KilnCheckpointConfig = {
    format: CHECKPOINT_FORMAT,
    formatVersion: CHECKPOINT_FORMAT_VERSION,
    architecture: arch.name,
    dtype,
    mapping: { worldSize: 1, tpSize: 1, ppSize: 1 },
    model: modelConfig as unknown as Record<string, unknown>,
    generation,
  };

  await writeDirAtomically(outputDir, async (tmpDir) => {
    const total = tensors.length;
    // The native writer reports no per-tensor progress; the two ends of the write are what we can see.
    options.onProgress?.({ done: 0, total, tensor: tensors[0]?.name ?? '' });
    await loadNative().writeSafetensors({
      path: path.join(tmpDir, CHECKPOINT_WEIGHTS_FILE),
      metadata: { format: CHECKPOINT_FORMAT },
      tensors,
      rejectNonFinite: options.allowNonFinite !== true,
    });
    options.onProgress?.({ done: total, total, tensor: tensors[total - 1]?.name ?? '' });
    await fs.writeFile(path.join(tmpDir, CHECKPOINT_CONFIG_FILE), `${JSON.stringify(config, null, 2)}\n`);
    for (const name of TOKENIZER_FILES) {
      const source = path.join(modelDir, name);
      if (await isFile(source)) await fs.copyFile(source, path.join(tmpDir, name));
    }
  });
  return { outputDir, config };
}

/** A GGUF file: staged as a Hugging Face folder beside the output, converted, the stage removed. */
async function convertGgufFile(options: ConvertOptions, modelFile: string): Promise<ConvertResult> {
  if (options.modelDir !== undefined) throw new Error('convertCheckpoint: give modelDir or modelFile, not both');
  if (options.dtype !== undefined && !isCheckpointDType(options.dtype)) {
    throw new Error(`dtype: expected one of ${CHECKPOINT_DTYPES.join(', ')}, got ${JSON.stringify(options.dtype)}`);
  }
  await assertReplaceable(path.resolve(options.outputDir));
  const staged = await stageGgufAsHf(modelFile, options.outputDir, loadNative(), options);
  try {
    const result = await convertCheckpoint({ ...options, modelFile: undefined, modelDir: staged.dir, dtype: staged.dtype });
    return { ...result, ggufMatrixTypes: staged.matrixTypes };
  } finally {
    await staged.dispose();
  }
}

/**
 * A tensor/pipeline-parallel conversion: the whole checkpoint into a temporary folder beside the output,
 * the mapping checked against the model (an error names the model's config and the size that does not
 * fit), then one weights file per rank into the output (shard.ts); the temporary folder is removed.
 */
async function convertSharded(options: ConvertOptions): Promise<ConvertResult> {
  const tpSize = options.tpSize ?? 1;
  const ppSize = options.ppSize ?? 1;
  for (const [key, value] of [['tpSize', tpSize], ['ppSize', ppSize]] as const) {
    if (!Number.isSafeInteger(value) || value < 1 || value > 4096) throw new Error(`${key}: expected an integer in [1, 4096], got ${JSON.stringify(value)}`);
  }
  const outputDir = path.resolve(options.outputDir);
  await assertReplaceable(outputDir);
  const temp = await createTempDirBeside(outputDir);
  try {
    const whole = await convertCheckpoint({ ...options, tpSize: 1, ppSize: 1, outputDir: path.join(temp.dir, 'whole') });
    const network = getArchitecture(whole.config.architecture).buildNetwork(whole.config.model as never).toJSON();
    try {
      checkMapping({ tpSize, ppSize }, parallelFacts(network), network);
    } catch (error) {
      if (!(error instanceof MappingError)) throw error;
      const source = options.modelFile ?? path.join(path.resolve(options.modelDir ?? '.'), 'config.json');
      throw new ConvertError(source, `tp ${tpSize} x pp ${ppSize} does not fit this model: ${error.message}`);
    }
    await shardCheckpoint({ checkpointDir: whole.outputDir, outputDir, tpSize, ppSize });
    return { outputDir, config: { ...whole.config, mapping: { worldSize: tpSize * ppSize, tpSize, ppSize } } };
  } finally {
    await fs.rm(temp.dir, { recursive: true, force: true });
    temp.release();
  }
}
