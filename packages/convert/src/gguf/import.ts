// GGUF import: a GGUF file becomes a Hugging Face folder (config.json, model.safetensors with
// transformers' names and the q/k rows un-permuted, tokenizer.json, tokenizer_config.json,
// generation_config.json) staged beside the output, which the ordinary conversion then reads, so a GGUF
// model goes through exactly the checks, renaming and writing of any Hugging Face checkpoint.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { ConfigError, type CheckpointDType } from '@kiln/models';
import type { GgmlTypeName, NativeAddon } from '@kiln/native';
import { ConvertError } from '../errors';
import { createTempDirBeside } from '../output-dir';
import { ggufArchitectureByName, ggufValueOffset, hfConfigFromGguf, hfTensorName, ropePermutationHeads } from './architectures';
import { GgufModelFile } from './gguf-file';
import { tokenizerFromGguf } from './tokenizer';

/**
 * The checkpoint dtype a GGUF file converts to by default: its 16-bit float type when its matrices are
 * F16 or BF16, float32 for an all-F32 file, and float16 for quantized files (Kiln has no int8/int4
 * checkpoint format yet, issue 12: the blocks are dequantized; float16 keeps 3 more mantissa bits of the
 * dequantized values than bfloat16, and their range is that of the F16 block scales).
 */
export function defaultGgufDType(types: Iterable<GgmlTypeName>): CheckpointDType {
  const set = new Set(types);
  if ([...set].some((t) => t !== 'F32' && t !== 'F16' && t !== 'BF16')) return 'float16';
  if (set.has('BF16') && !set.has('F16')) return 'bfloat16';
  if (set.has('F16')) return 'float16';
  return 'float32';
}

export interface StagedGguf {
  /** The Hugging Face folder; remove it with `dispose()` once converted. */
  dir: string;
  dtype: CheckpointDType;
  /** The GGML types of the file's matrices (2-D and up), each once, in file order. */
  matrixTypes: GgmlTypeName[];
  dispose(): Promise<void>;
}

/**
 * Writes the Hugging Face folder of `ggufFile` beside `outputDir` (removed at process exit if not
 * disposed). Errors name the GGUF file and the metadata key or tensor at fault.
 */
export async function stageGgufAsHf(
  ggufFile: string,
  outputDir: string,
  native: Pick<NativeAddon, 'readGguf' | 'writeSafetensorsFromGguf'>,
  options: { dtype?: CheckpointDType; allowNonFinite?: boolean },
): Promise<StagedGguf> {
  const file = await GgufModelFile.read(ggufFile, native);
  const arch = ggufArchitectureByName(file.path, file.string('general.architecture'));
  const config = hfConfigFromGguf(file, arch);
  const tokenizer = tokenizerFromGguf(file);

  // Every tensor must have a transformers name: an unknown one means a layout this import would get wrong.
  const heads = { numHeads: config.num_attention_heads as number, numKvHeads: config.num_key_value_heads as number };
  const matrixTypes: GgmlTypeName[] = [];
  const tensors = file.info.tensors.map((t) => {
    const name = hfTensorName(arch, t.name);
    if (name === undefined) {
      throw new ConfigError(file.path, t.name, `a tensor the ${arch.gguf} import does not know (it would be dropped)`);
    }
    if (t.shape.length > 1) matrixTypes.push(t.type);
    return {
      name,
      tensor: t.name,
      unpermuteHeads: ropePermutationHeads(arch, name, heads),
      valueOffset: -ggufValueOffset(arch, name),
      ...(arch.conv1dWeights?.test(name) ? { transpose: true } : {}),
    };
  });
  const dtype = options.dtype ?? defaultGgufDType(matrixTypes);
  config.dtype = dtype;
  config.bos_token_id = tokenizer.bosTokenId;
  config.eos_token_id = tokenizer.eosTokenId;
  config.pad_token_id = tokenizer.padTokenId;

  const staged = await createTempDirBeside(`${path.resolve(outputDir)}.gguf`);
  const dispose = async () => {
    await fs.rm(staged.dir, { recursive: true, force: true });
    staged.release();
  };
  try {
    const json = (value: unknown) => `${JSON.stringify(value, null, 2)}\n`;
    await fs.writeFile(path.join(staged.dir, 'config.json'), json(config));
    await fs.writeFile(
      path.join(staged.dir, 'generation_config.json'),
      json({ bos_token_id: tokenizer.bosTokenId, eos_token_id: tokenizer.eosTokenId, pad_token_id: tokenizer.padTokenId }),
    );
    await fs.writeFile(path.join(staged.dir, 'tokenizer.json'), JSON.stringify(tokenizer.tokenizerJson));
    await fs.writeFile(path.join(staged.dir, 'tokenizer_config.json'), json(tokenizer.tokenizerConfig));
    // 1-D tensors (norm weights, biases) keep float32 in the stage only when the checkpoint is float32;
    // the conversion casts everything to one dtype anyway.
    await native.writeSafetensorsFromGguf({
      gguf: file.path,
      path: path.join(staged.dir, 'model.safetensors'),
      tensors: tensors.map((t) => ({ ...t, dtype })),
      rejectNonFinite: options.allowNonFinite !== true,
    });
  } catch (error) {
    await dispose();
    if (error instanceof ConfigError || error instanceof ConvertError) throw error;
    throw new ConvertError(file.path, (error as Error).message.replace(`${file.path}: `, ''));
  }
  return { dir: staged.dir, dtype, matrixTypes: [...new Set(matrixTypes)], dispose };
}
