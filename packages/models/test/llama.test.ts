import * as fs from 'node:fs';
import * as path from 'node:path';
import { ConfigError, getArchitecture, listArchitectures, registerArchitecture, UnsupportedArchitectureError } from '@kiln/models';
import type { LlamaConfig } from '../src/llama';

const fixtures = path.resolve(__dirname, '../../../fixtures/hf-tiny');
const readConfig = (name: string) => JSON.parse(fs.readFileSync(path.join(fixtures, name, 'config.json'), 'utf8'));
const parse = (name: string) => {
  const hf = readConfig(name);
  return getArchitecture(hf.architectures[0]).parseConfig(hf, `${name}/config.json`) as unknown as LlamaConfig;
};

describe('LLaMA family configs', () => {
  test('llama: transformers-5 rope_parameters', () => {
    const config = parse('llama');
    expect(config).toMatchObject({ hiddenSize: 64, numHeads: 4, numKvHeads: 2, headDim: 16, ropeTheta: 10000, rmsNormEps: 1e-5 });
    expect(config.ropeScaling).toEqual({ type: 'default' });
    expect(config.tieWordEmbeddings).toBe(false);
    expect(config.slidingWindows).toEqual([0, 0]);
  });

  test('llama3_scaled_rope: legacy rope_theta + rope_scaling, tied embeddings', () => {
    const config = parse('llama3_scaled_rope');
    expect(config.ropeTheta).toBe(500000);
    expect(config.ropeScaling).toEqual({ type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 32 });
    expect(config.tieWordEmbeddings).toBe(true);
  });

  test('mistral: sliding window on every layer', () => {
    expect(parse('mistral').slidingWindows).toEqual([8, 8]);
  });

  test('qwen2: q/k/v biases, no output bias, tied, no sliding window unless switched on', () => {
    const config = parse('qwen2');
    expect(config).toMatchObject({ qkvBias: true, outputBias: false, tieWordEmbeddings: true, slidingWindows: [0, 0] });
    const hf = { ...readConfig('qwen2'), use_sliding_window: true, sliding_window: 4, layer_types: ['full_attention', 'sliding_attention'] };
    expect((getArchitecture('Qwen2ForCausalLM').parseConfig(hf, 'x') as unknown as LlamaConfig).slidingWindows).toEqual([0, 4]);
  });

  test('checkpoint plan: tied models have no lm_head, qwen2 has q/k/v biases', () => {
    const qwen = getArchitecture('Qwen2ForCausalLM');
    const names = qwen.checkpointTensors(parse('qwen2') as never).map((t) => t.name);
    expect(names).not.toContain('lm_head.weight');
    expect(names).toContain('transformer.layers.0.attention.q.bias');
    expect(names).not.toContain('transformer.layers.0.attention.dense.bias');
    const llama = getArchitecture('LlamaForCausalLM').checkpointTensors(parse('llama') as never);
    expect(llama.find((t) => t.name === 'lm_head.weight')?.sources).toEqual([{ tensor: 'lm_head.weight', shape: [512, 64] }]);
  });

  test('a missing required key names the file and the key', () => {
    const hf = readConfig('llama');
    delete hf.hidden_size;
    expect(() => getArchitecture('LlamaForCausalLM').parseConfig(hf, 'llama/config.json')).toThrow(
      new ConfigError('llama/config.json', 'hidden_size', 'required key is missing'),
    );
  });

  test('bad values are rejected with the key', () => {
    const hf = { ...readConfig('llama'), num_key_value_heads: 3 };
    expect(() => getArchitecture('LlamaForCausalLM').parseConfig(hf, 'c.json')).toThrow(/c.json: num_key_value_heads: 3 does not divide/);
    const rope = { ...readConfig('llama'), rope_parameters: { rope_type: 'yarn', factor: 2 } };
    expect(() => getArchitecture('LlamaForCausalLM').parseConfig(rope, 'c.json')).toThrow(/rope_parameters.rope_type: "yarn" is not supported/);
  });
});

describe('registry', () => {
  test('lists the supported architectures and names them when one is unknown', () => {
    expect(listArchitectures()).toEqual(expect.arrayContaining(['LlamaForCausalLM', 'MistralForCausalLM', 'Qwen2ForCausalLM']));
    expect(() => getArchitecture('T5ForConditionalGeneration', 't5/config.json')).toThrow(UnsupportedArchitectureError);
    expect(() => getArchitecture('T5ForConditionalGeneration')).toThrow(/Supported architectures: .*LlamaForCausalLM/);
  });

  test('an outside package can add an architecture, but not silently replace one', () => {
    const llama = getArchitecture('LlamaForCausalLM');
    registerArchitecture({ ...llama, name: 'MyLlamaForCausalLM' });
    expect(getArchitecture('MyLlamaForCausalLM').family).toBe('llama');
    expect(() => registerArchitecture({ ...llama })).toThrow(/already registered/);
  });
});
