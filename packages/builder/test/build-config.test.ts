// resolveBuildConfig: defaults per target and the validation of every target field. The native addon is
// replaced by a fake whose CPU and GPU answers the test sets, so no device is needed (and a cuda build is
// shown not to probe the CPU, nor a cpu build the GPU).
const probes = { cpu: 0, cuda: 0 };
let cudaDevices: { index: number; name: string; computeCapability: string; totalBytes: number; freeBytes: number }[] = [];

jest.mock('@kiln/native', () => ({
  loadNative: () => ({
    cpuInfo: () => {
      probes.cpu++;
      return { isa: 'avx2', hardwareConcurrency: 2 };
    },
    cudaInfo: () => {
      probes.cuda++;
      return cudaDevices.length > 0 ? { compiled: true, devices: cudaDevices } : { compiled: false, devices: [], error: 'no CUDA backend' };
    },
  }),
}));

import * as path from 'node:path';
import { defaultComputeCapability, resolveBuildConfig, resolveModelBuildConfig, type BuildConfig } from '@kiln/builder';

const model = { maxPositionEmbeddings: 512 } as Parameters<typeof resolveBuildConfig>[1];
const resolve = (partial: Record<string, unknown>, checkpointDType: 'float32' | 'float16' | 'bfloat16' = 'float32') =>
  resolveBuildConfig(partial as Partial<BuildConfig>, model, checkpointDType);

beforeEach(() => {
  probes.cpu = 0;
  probes.cuda = 0;
  cudaDevices = [];
});

describe('resolveBuildConfig', () => {
  it('defaults to a cpu engine in the checkpoint dtype, for this CPU', () => {
    expect(resolve({}, 'bfloat16')).toEqual({
      target: 'cpu',
      maxBatchSize: 8,
      maxSeqLen: 512,
      maxNumTokens: 512,
      gatherContextLogits: false,
      maxBeamWidth: 1,
      tokensPerBlock: 16,
      dtype: 'bfloat16',
      isa: 'avx2',
    });
    expect(probes).toEqual({ cpu: 1, cuda: 0 });
  });

  it('keeps a given isa and dtype on the cpu, probing nothing', () => {
    expect(resolve({ target: 'cpu', isa: 'generic', dtype: 'float16' })).toMatchObject({ target: 'cpu', isa: 'generic', dtype: 'float16' });
    expect(probes).toEqual({ cpu: 0, cuda: 0 });
  });

  it('takes int8 weight-only quantization on the cpu and on cuda; "none" is the same config as no field at all', () => {
    expect(resolve({ quantization: 'int8' })).toMatchObject({ target: 'cpu', quantization: 'int8' });
    expect(resolve({ quantization: 'none' })).toEqual(resolve({}));
    expect(resolve({})).not.toHaveProperty('quantization');
    expect(() => resolve({ quantization: 'int3' as never })).toThrow('build config: quantization must be "int8", "int4", "fp8", "q8_0" or "none", got "int3"');
    expect(resolve({ target: 'cuda', computeCapability: '9.0', quantization: 'int8' })).toMatchObject({ target: 'cuda', quantization: 'int8' });
    expect(resolve({ target: 'cuda', computeCapability: '9.0', quantization: 'none' })).not.toHaveProperty('quantization');
  });

  it('takes fp8 on the cpu (the reference) and on cuda 8.9+', () => {
    expect(resolve({ quantization: 'fp8' })).toMatchObject({ target: 'cpu', quantization: 'fp8' });
    expect(resolve({ target: 'cuda', computeCapability: '9.0', quantization: 'fp8' })).toMatchObject({ target: 'cuda', quantization: 'fp8' });
    expect(resolve({ target: 'cuda', computeCapability: '8.9', quantization: 'fp8' })).toMatchObject({ quantization: 'fp8' });
    expect(() => resolve({ target: 'cuda', computeCapability: '8.0', quantization: 'fp8' })).toThrow('needs computeCapability 8.9 or newer');
  });

  it('takes int4 with a group size: 32 by default on the cpu, 128 on cuda', () => {
    expect(resolve({ quantization: 'int4' })).toMatchObject({ target: 'cpu', quantization: 'int4', groupSize: 32 });
    expect(resolve({ quantization: 'int4', groupSize: 128 })).toMatchObject({ quantization: 'int4', groupSize: 128 });
    expect(resolve({ quantization: 'int8' })).not.toHaveProperty('groupSize');
    expect(() => resolve({ quantization: 'int8', groupSize: 32 })).toThrow('build config: groupSize applies to quantization "int4" only');
    expect(() => resolve({ groupSize: 32 })).toThrow('groupSize applies to quantization "int4" only');
    for (const bad of [48, 0, 16, 8192, 32.5, '32']) {
      expect(() => resolve({ quantization: 'int4', groupSize: bad as number })).toThrow('build config: groupSize must be a multiple of 32 in [32, 4096]');
    }
    expect(resolve({ target: 'cuda', computeCapability: '9.0', quantization: 'int4' })).toMatchObject({ target: 'cuda', quantization: 'int4', groupSize: 128 });
    expect(resolve({ target: 'cuda', computeCapability: '9.0', quantization: 'int4', groupSize: 64 })).toMatchObject({ groupSize: 64 });
  });

  it("takes q8_0 (llama.cpp's blocks, decision 0016) on the cpu only", () => {
    expect(resolve({ quantization: 'q8_0' })).toMatchObject({ target: 'cpu', quantization: 'q8_0' });
    expect(() => resolve({ target: 'cuda', computeCapability: '9.0', quantization: 'q8_0' })).toThrow('quantization "q8_0"');
  });

  it('builds cuda for the given compute capability, with no isa', () => {
    const config = resolve({ target: 'cuda', computeCapability: '8.0', dtype: 'bfloat16' });
    expect(config).toMatchObject({ target: 'cuda', computeCapability: '8.0', dtype: 'bfloat16', maxBatchSize: 8 });
    expect(config).not.toHaveProperty('isa');
    expect(probes).toEqual({ cpu: 0, cuda: 0 });
  });

  it("defaults cuda's compute capability to device 0's, else 9.0", () => {
    expect(resolve({ target: 'cuda' })).toMatchObject({ computeCapability: '9.0', dtype: 'float32' });
    cudaDevices = [
      { index: 0, name: 'NVIDIA A100', computeCapability: '8.0', totalBytes: 80e9, freeBytes: 79e9 },
      { index: 1, name: 'NVIDIA H200', computeCapability: '9.0', totalBytes: 141e9, freeBytes: 140e9 },
    ];
    expect(resolve({ target: 'cuda' })).toMatchObject({ computeCapability: '8.0' });
    expect(defaultComputeCapability()).toBe('8.0');
    expect(probes.cpu).toBe(0);
  });

  it.each([
    [{ target: 'tpu' }, 'build config: target must be "cpu" or "cuda", got "tpu"'],
    [{ dtype: 'int8' }, 'build config: dtype must be one of float32, float16, bfloat16, got "int8"'],
    [{ target: 'cuda', dtype: 'float64' }, 'build config: dtype must be one of float32, float16, bfloat16, got "float64"'],
    [{ target: 'cuda', computeCapability: 'sm_90' }, 'build config: computeCapability must be "major.minor" (e.g. "9.0"), got "sm_90"'],
    [{ target: 'cuda', computeCapability: '9' }, 'build config: computeCapability must be "major.minor" (e.g. "9.0"), got "9"'],
    [{ target: 'cuda', computeCapability: 9 }, 'build config: computeCapability must be "major.minor" (e.g. "9.0"), got 9'],
    [{ target: 'cuda', isa: 'avx2' }, 'build config: isa applies to target "cpu" only'],
    [{ computeCapability: '9.0' }, 'build config: computeCapability applies to target "cuda" only'],
    [{ isa: 'avx512' }, 'build config: isa must be "avx2" or "generic", got "avx512"'],
    [{ target: 'cuda', maxBatchSize: 0 }, 'build config: maxBatchSize must be an integer in [1, 4096], got 0'],
  ])('rejects %j, naming the field', (partial, message) => {
    expect(() => resolve(partial)).toThrow(message);
  });
});

describe('resolveModelBuildConfig (the engine cache\'s key)', () => {
  const llama = path.resolve(__dirname, '..', '..', '..', 'fixtures', 'hf-tiny', 'llama');
  const bf16 = path.resolve(__dirname, '..', '..', '..', 'fixtures', 'hf-tiny', 'llama_bf16');

  it('resolves equivalent options to one config, from config.json alone', async () => {
    const base = await resolveModelBuildConfig(llama, {});
    // The fixture: float32, max_position_embeddings 256.
    expect(base).toEqual({ target: 'cpu', isa: 'avx2', maxBatchSize: 8, maxSeqLen: 256, maxNumTokens: 256, gatherContextLogits: false, maxBeamWidth: 1, tokensPerBlock: 16, dtype: 'float32' });
    for (const partial of [{ gatherContextLogits: false }, { target: 'cpu' }, { dtype: 'float32' }, { maxSeqLen: 256, maxNumTokens: 256 }, { isa: 'avx2' }, { maxBatchSize: 8, maxBeamWidth: 1, tokensPerBlock: 16 }]) {
      expect(await resolveModelBuildConfig(llama, partial as Partial<BuildConfig>)).toEqual(base);
    }
    expect(await resolveModelBuildConfig(llama, { maxBatchSize: 4 })).not.toEqual(base);
    expect(await resolveModelBuildConfig(llama, { dtype: 'bfloat16' })).not.toEqual(base);
    // The default dtype is the checkpoint's.
    expect((await resolveModelBuildConfig(bf16, {})).dtype).toBe('bfloat16');
  });

  it('names what is wrong with the folder or the options', async () => {
    await expect(resolveModelBuildConfig(path.join(llama, 'missing'), {})).rejects.toThrow('model folder not found');
    await expect(resolveModelBuildConfig(llama, { maxBatchSize: 0 })).rejects.toThrow('maxBatchSize must be an integer in [1, 4096], got 0');
  });
});
