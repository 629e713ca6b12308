// Every zoo fixture: the config parses, the checkpoint plan names exactly the network's parameters with
// the same shapes, and every planned HF source exists in the fixture's safetensors with the planned shape
// (and every HF tensor is either planned or ignored) — the contract @kiln/convert relies on.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ConfigError, alibiSlopes, getArchitecture } from '@kiln/models';

const fixtures = path.resolve(__dirname, '../../../fixtures/hf-tiny');
const FIXTURES = [
  'qwen3', 'gemma', 'gemma2', 'phi3', 'phi', 'gpt2', 'gpt_neox', 'opt',
  'falcon', 'bloom', 'gptj', 'gpt_bigcode', 'starcoder2', 'mixtral',
];

function readHeader(file: string): Map<string, number[]> {
  const bytes = fs.readFileSync(file);
  const length = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + length).toString('utf8')) as Record<string, { shape: number[] }>;
  return new Map(Object.entries(header).filter(([name]) => name !== '__metadata__').map(([name, t]) => [name, t.shape]));
}

const readConfig = (name: string) => JSON.parse(fs.readFileSync(path.join(fixtures, name, 'config.json'), 'utf8'));

describe.each(FIXTURES)('%s', (fixture) => {
  const hf = readConfig(fixture);
  const arch = getArchitecture(hf.architectures[0]);

  test('plan matches the network and the HF checkpoint', () => {
    const config = arch.parseConfig(hf, `${fixture}/config.json`);
    const plan = arch.checkpointTensors(config);
    const network = arch.buildNetwork(JSON.parse(JSON.stringify(config)));
    const planned = new Map(plan.map((t) => [t.name, t.shape]));
    const params = new Map([...network.parameters].map(([name, t]) => [name, [...t.shape]]));
    expect([...planned.keys()].sort()).toEqual([...params.keys()].sort());
    for (const [name, shape] of planned) expect([name, params.get(name)]).toEqual([name, shape]);

    const tensors = readHeader(path.join(fixtures, fixture, 'model.safetensors'));
    const used = new Set<string>();
    for (const t of plan) {
      let elements = 0;
      for (const source of t.sources) {
        expect([source.tensor, tensors.get(source.tensor)]).toEqual([source.tensor, source.shape]);
        used.add(source.tensor);
        const rows = source.transpose ? source.shape[1] : source.shape[0];
        const perRow = source.shape.reduce((a, b) => a * b, 1) / rows;
        elements += (source.rowCount ?? rows - (source.rowStart ?? 0)) * perRow;
      }
      expect([t.name, elements]).toEqual([t.name, t.shape.reduce((a, b) => a * b, 1)]);
    }
    const unused = [...tensors.keys()].filter((n) => !used.has(n) && !(arch.ignoredTensors ?? []).some((re) => re.test(n)));
    expect(unused).toEqual([]);
  });
});

describe('zoo configs', () => {
  test('BLOOM ALiBi slopes follow build_alibi_tensor, including non-power-of-2 head counts', () => {
    expect(alibiSlopes(4)).toEqual([0.25, 0.0625, 0.015625, 0.00390625]);
    // 6 heads: the 4 slopes of 4 heads, then 2^(-8/8 * 1) and 2^(-8/8 * 3) from the 8-head base.
    const six = alibiSlopes(6);
    expect(six.slice(0, 4)).toEqual(alibiSlopes(4));
    expect(six.slice(4)).toEqual([Math.fround(2 ** -1 * 1), Math.fround(2 ** -3)].map((x) => Math.fround(x)));
  });

  test('Falcon with alibi and OPT with post-LayerNorm fail naming the key', () => {
    const falcon = { ...readConfig('falcon'), alibi: true };
    expect(() => getArchitecture('FalconForCausalLM').parseConfig(falcon, 'falcon/config.json')).toThrow(ConfigError);
    expect(() => getArchitecture('FalconForCausalLM').parseConfig(falcon, 'falcon/config.json')).toThrow(/falcon\/config.json: alibi/);
    const opt = { ...readConfig('opt'), do_layer_norm_before: false };
    expect(() => getArchitecture('OPTForCausalLM').parseConfig(opt, 'opt/config.json')).toThrow(/do_layer_norm_before/);
    const projected = { ...readConfig('opt'), word_embed_proj_dim: 32 };
    expect(() => getArchitecture('OPTForCausalLM').parseConfig(projected, 'opt/config.json')).toThrow(/word_embed_proj_dim/);
  });

  test('legacy and transformers-5 rotary keys agree (GPT-NeoX rotary_pct / rotary_emb_base)', () => {
    const legacy = getArchitecture('GPTNeoXForCausalLM').parseConfig(readConfig('gpt_neox'), 'x') as any;
    const { rotary_pct: _p, rotary_emb_base: _b, ...rest } = readConfig('gpt_neox');
    const modern = getArchitecture('GPTNeoXForCausalLM').parseConfig(
      { ...rest, rope_parameters: { rope_type: 'default', rope_theta: 10000, partial_rotary_factor: 0.25 } }, 'x') as any;
    expect(modern.attention.rotary).toEqual(legacy.attention.rotary);
    expect(legacy.attention.rotary.rotaryDim).toBe(4);
  });
});
