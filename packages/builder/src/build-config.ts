import { CHECKPOINT_DTYPES, defaultDType, isCheckpointDType, readHfConfig } from '@kiln/convert';
import { loadNative, type WeightDType } from '@kiln/native';
import { getArchitecture, type BaseModelConfig } from '@kiln/models';
import type { BuildConfig, BuildConfigCommon } from './types';

/** The compute capability a cuda build defaults to when no device is visible: Hopper (H100, H200). */
export const FALLBACK_COMPUTE_CAPABILITY = '9.0';

/** The largest int4 group size a build accepts (the native reader takes up to 65536). */
const MAX_GROUP_SIZE = 4096;

function checkInteger(name: keyof BuildConfigCommon, value: number, min: number, max: number): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new RangeError(`build config: ${name} must be an integer in [${min}, ${max}], got ${value}`);
  }
  return value;
}

/**
 * The compute capability `kiln build --target cuda` compiles for by default: device 0's as the CUDA
 * runtime reports it, else "9.0" (an addon without CUDA, no driver, or no device: a build machine
 * need not have the GPU the engine will run on).
 */
export function defaultComputeCapability(): string {
  return loadNative().cudaInfo().devices[0]?.computeCapability ?? FALLBACK_COMPUTE_CAPABILITY;
}

/**
 * Fills defaults (documented on BuildConfig) and validates every field, naming the one at fault.
 * `checkpointDType` is the storage dtype of the checkpoint's weights: the default `dtype`.
 */
export function resolveBuildConfig(partial: Partial<BuildConfig> = {}, model: BaseModelConfig, checkpointDType: WeightDType): BuildConfig {
  const given = partial as Partial<Record<'target' | 'isa' | 'computeCapability' | 'dtype' | 'quantization' | 'groupSize' | 'bf16LinearInputs', unknown>>;
  const target = given.target ?? 'cpu';
  if (target !== 'cpu' && target !== 'cuda') throw new RangeError(`build config: target must be "cpu" or "cuda", got ${JSON.stringify(target)}`);
  const dtype = given.dtype ?? checkpointDType;
  if (!isCheckpointDType(dtype)) {
    throw new RangeError(`build config: dtype must be one of ${CHECKPOINT_DTYPES.join(', ')}, got ${JSON.stringify(dtype)}`);
  }

  const maxSeqLen = checkInteger('maxSeqLen', partial.maxSeqLen ?? Math.min(model.maxPositionEmbeddings, 4096), 2, 1 << 20);
  const maxBatchSize = checkInteger('maxBatchSize', partial.maxBatchSize ?? 8, 1, 4096);
  const common: BuildConfigCommon = {
    maxBatchSize,
    maxSeqLen,
    maxNumTokens: checkInteger('maxNumTokens', partial.maxNumTokens ?? Math.min(maxSeqLen, 2048), 1, 1 << 20),
    gatherContextLogits: Boolean(partial.gatherContextLogits ?? false),
    maxBeamWidth: checkInteger('maxBeamWidth', partial.maxBeamWidth ?? 1, 1, maxBatchSize),
    tokensPerBlock: checkInteger('tokensPerBlock', partial.tokensPerBlock ?? 16, 1, 1024),
    dtype,
  };

  // Absent rather than "none" when off, so configs (and build hashes) without quantization stay as they were.
  const quantization = given.quantization === 'none' ? undefined : given.quantization;
  if (quantization !== undefined && quantization !== 'int8' && quantization !== 'int4' && quantization !== 'fp8' && quantization !== 'q8_0') {
    throw new RangeError(`build config: quantization must be "int8", "int4", "fp8", "q8_0" or "none", got ${JSON.stringify(quantization)}`);
  }
  // int4's group size (decision 0014): input features per scale, a multiple of 32 (one packed block).
  // Defaults: 32 on the CPU (issue 12, llama.cpp's Q4_0 block), 128 on cuda (issue 10, TensorRT-LLM's W4A16).
  if (given.groupSize !== undefined && quantization !== 'int4') {
    throw new RangeError('build config: groupSize applies to quantization "int4" only');
  }
  const groupSize = quantization === 'int4' ? (given.groupSize ?? (target === 'cuda' ? 128 : 32)) : undefined;
  if (groupSize !== undefined && (typeof groupSize !== 'number' || !Number.isSafeInteger(groupSize) || groupSize < 32 || groupSize > MAX_GROUP_SIZE || groupSize % 32 !== 0)) {
    throw new RangeError(`build config: groupSize must be a multiple of 32 in [32, ${MAX_GROUP_SIZE}], got ${JSON.stringify(groupSize)}`);
  }
  const quantized = quantization ? { quantization, ...(groupSize !== undefined ? { groupSize } : {}) } : {};
  if (target === 'cpu') {
    if (given.computeCapability !== undefined) throw new RangeError('build config: computeCapability applies to target "cuda" only');
    // Asked of the CPU only when not given, so a build for another machine's ISA needs no probing.
    const isa = given.isa ?? loadNative().cpuInfo().isa;
    if (isa !== 'avx2' && isa !== 'generic') throw new RangeError(`build config: isa must be "avx2" or "generic", got ${JSON.stringify(isa)}`);
    const bf16LinearInputs = given.bf16LinearInputs === true;
    if (given.bf16LinearInputs !== undefined && typeof given.bf16LinearInputs !== 'boolean') {
      throw new RangeError(`build config: bf16LinearInputs must be a boolean, got ${JSON.stringify(given.bf16LinearInputs)}`);
    }
    if (bf16LinearInputs && (dtype !== 'bfloat16' || quantization)) {
      throw new RangeError('build config: bf16LinearInputs applies to bfloat16 weights only (dtype "bfloat16", no quantization)');
    }
    return { target, ...common, isa, ...quantized, ...(bf16LinearInputs ? { bf16LinearInputs: true as const } : {}) };
  }
  if (given.bf16LinearInputs !== undefined && given.bf16LinearInputs !== false) {
    throw new RangeError('build config: bf16LinearInputs applies to target "cpu" only (cuda engines read GEMM inputs in their activation dtype anyway)');
  }
  if (given.isa !== undefined) throw new RangeError('build config: isa applies to target "cpu" only (a cuda engine is built for a computeCapability)');
  if (quantization === 'q8_0') {
    throw new RangeError('build config: quantization "q8_0" (llama.cpp\'s Q8_0 blocks, decision 0016) has cpu kernels only; use target "cpu"');
  }
  const computeCapability = given.computeCapability ?? defaultComputeCapability();
  if (typeof computeCapability !== 'string' || !/^\d+\.\d+$/.test(computeCapability)) {
    throw new RangeError(`build config: computeCapability must be "major.minor" (e.g. "9.0"), got ${JSON.stringify(computeCapability)}`);
  }
  // cuBLASLt's FP8 GEMM and the e4m3 conversions of kernels/fp8.cu need Ada or Hopper (8.9+).
  if (quantization === 'fp8' && Number(computeCapability) < 8.9) {
    throw new RangeError(`build config: quantization "fp8" needs computeCapability 8.9 or newer (FP8 tensor cores), got "${computeCapability}"`);
  }
  return { target, ...common, computeCapability, ...quantized };
}

/**
 * The build config an engine of a Hugging Face model folder gets from `partial` once converted (with the
 * checkpoint's own dtype) and built: every default filled from the folder's config.json alone, without
 * reading weights. Equivalent options resolve to equal configs (`{}`, `{ gatherContextLogits: false }`
 * and `{ target: 'cpu' }` alike), so it is what an engine cache keys on. Throws as resolveBuildConfig
 * does for an invalid field, and as the converter does for a folder it cannot read.
 */
export async function resolveModelBuildConfig(modelDir: string, partial: Partial<BuildConfig> = {}): Promise<BuildConfig> {
  const hf = await readHfConfig(modelDir);
  const model = getArchitecture(hf.architecture, hf.path).parseConfig(hf.json, hf.path);
  return resolveBuildConfig(partial, model, defaultDType(hf.json));
}
