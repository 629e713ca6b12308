// The planning step alone: pure TypeScript over header descriptions, no files and no native code.
import type { ArchitectureDefinition, BaseModelConfig, CheckpointTensorPlan } from '@kiln/models';
import type { SafetensorsTensorInfo } from '@kiln/native';
import { planConversion, type HfTensor } from '@kiln/convert';

function arch(plans: CheckpointTensorPlan[], ignoredTensors?: RegExp[]): ArchitectureDefinition<BaseModelConfig> {
  return {
    name: 'PlanTestForCausalLM',
    family: 'test',
    parseConfig: () => ({ vocabSize: 4, maxPositionEmbeddings: 8 }),
    checkpointTensors: () => plans,
    ignoredTensors,
    buildNetwork: () => {
      throw new Error('unused');
    },
  };
}

function tensors(entries: [string, string, number[], string?][]): Map<string, HfTensor> {
  return new Map(
    entries.map(([name, dtype, shape, file = '/m/model.safetensors']) => {
      const info: SafetensorsTensorInfo = { name, dtype, shape, byteOffset: 0, byteLength: 0 };
      return [name, { file, info }];
    }),
  );
}

const plan = (def: ArchitectureDefinition<BaseModelConfig>, t: Map<string, HfTensor>) =>
  planConversion({ arch: def, modelConfig: { vocabSize: 4, maxPositionEmbeddings: 8 }, tensors: t, dtype: 'float16', modelDir: '/m' });

const qkv: CheckpointTensorPlan = {
  name: 'qkv',
  shape: [6, 2],
  sources: [
    { tensor: 'q', shape: [2, 2] },
    { tensor: 'k', shape: [4, 2], rowStart: 1, rowCount: 2 },
    { tensor: 'v', shape: [2, 2], transpose: true },
  ],
};

describe('planConversion', () => {
  it('maps every plan entry to a write spec on the right shard', () => {
    const specs = plan(arch([qkv], [/^rotary\./]), tensors([['q', 'F32', [2, 2]], ['k', 'BF16', [4, 2], '/m/b.safetensors'], ['v', 'F16', [2, 2]], ['rotary.inv_freq', 'F32', [1]]]));
    expect(specs).toEqual([
      {
        name: 'qkv',
        dtype: 'float16',
        shape: [6, 2],
        sources: [
          { file: '/m/model.safetensors', tensor: 'q' },
          { file: '/m/b.safetensors', tensor: 'k', rowStart: 1, rowCount: 2 },
          { file: '/m/model.safetensors', tensor: 'v', transpose: true },
        ],
      },
    ]);
  });

  it('names the first missing tensor, its shape and how many more are missing', () => {
    expect(() => plan(arch([qkv]), tensors([['q', 'F32', [2, 2]]]))).toThrow('/m: missing tensor "k" (expected shape [4, 2]) (and 1 more missing)');
  });

  it('names a wrong shape, its file and both shapes', () => {
    expect(() => plan(arch([qkv]), tensors([['q', 'F32', [2, 2]], ['k', 'F32', [4, 3], '/m/b.safetensors'], ['v', 'F32', [2, 2]]]))).toThrow(
      '/m/b.safetensors: tensor "k" has shape [4, 3] but the config implies [4, 2]',
    );
  });

  it('refuses non-float sources', () => {
    expect(() => plan(arch([qkv]), tensors([['q', 'I64', [2, 2]], ['k', 'F32', [4, 2]], ['v', 'F32', [2, 2]]]))).toThrow('tensor "q" has dtype I64');
  });

  it('refuses unused tensors the architecture does not ignore', () => {
    const t = tensors([['q', 'F32', [2, 2]], ['k', 'F32', [4, 2]], ['v', 'F32', [2, 2]], ['extra', 'F32', [3]], ['rotary.x', 'F32', [1]]]);
    expect(() => plan(arch([qkv]), t)).toThrow(
      'unexpected tensor "extra" [3] in /m/model.safetensors: not part of PlanTestForCausalLM with this config (and 1 more unexpected tensors)',
    );
    expect(() => plan(arch([qkv], [/^rotary\./g]), t)).toThrow(/unexpected tensor "extra" \[3\] .* this config$/);
  });

  it('catches plans that contradict themselves (architecture bugs)', () => {
    const t = tensors([['q', 'F32', [2, 2]], ['k', 'F32', [4, 2]], ['v', 'F32', [2, 2]]]);
    expect(() => plan(arch([{ ...qkv, shape: [7, 2] }]), t)).toThrow('architecture PlanTestForCausalLM: checkpoint tensor "qkv": its sources hold 12 elements');
    const outside = { ...qkv, sources: [{ tensor: 'k', shape: [4, 2], rowStart: 3, rowCount: 2 }] };
    expect(() => plan(arch([outside]), t)).toThrow("rows [3, 5) are outside k's 4 rows");
    expect(() => plan(arch([qkv, qkv]), t)).toThrow('planned twice');
  });
});
