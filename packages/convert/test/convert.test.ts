import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  ConfigError,
  getArchitecture,
  registerArchitecture,
  UnsupportedArchitectureError,
  type BaseModelConfig,
  type CheckpointTensorPlan,
} from '@kiln/models';
import { loadNative } from '@kiln/native';
import { convertCheckpoint, readKilnCheckpoint } from '@kiln/convert';
import {
  bf16Bits,
  readRaw,
  readTensors,
  toFloat32,
  transpose,
  writeRaw,
  writeTensors,
  type Tensor,
} from './safetensors-files';

const FIXTURES = path.resolve(__dirname, '../../../fixtures/hf-tiny');
let root: string;

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-convert-'));
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

let counter = 0;
/** A fresh copy of a fixture (only the files a model folder has; reference outputs stay behind). */
async function copyFixture(name: string): Promise<string> {
  const dir = path.join(root, `${name}-${counter++}`);
  await fs.mkdir(dir);
  for (const file of await fs.readdir(path.join(FIXTURES, name))) {
    if (file.startsWith('reference')) continue;
    await fs.copyFile(path.join(FIXTURES, name, file), path.join(dir, file));
  }
  return dir;
}

function outputPath(): string {
  return path.join(root, `out-${counter++}`, 'checkpoint');
}

async function exists(file: string): Promise<boolean> {
  return fs.stat(file).then(
    () => true,
    () => false,
  );
}

/** Nothing at outputDir and no temporary or set-aside folder beside it. */
async function expectNothingLeft(outputDir: string): Promise<void> {
  expect(await exists(outputDir)).toBe(false);
  const parent = path.dirname(outputDir);
  const siblings = (await exists(parent)) ? await fs.readdir(parent) : [];
  expect(siblings.filter((name) => name.startsWith(`${path.basename(outputDir)}.`))).toEqual([]);
}

async function editConfig(dir: string, edit: (config: Record<string, unknown>) => void, file = 'config.json'): Promise<void> {
  const config = JSON.parse(await fs.readFile(path.join(dir, file), 'utf8'));
  edit(config);
  await fs.writeFile(path.join(dir, file), JSON.stringify(config, null, 2));
}

async function editTensors(dir: string, edit: (tensors: Map<string, Tensor>) => void): Promise<void> {
  const file = path.join(dir, 'model.safetensors');
  const tensors = await readTensors(file);
  edit(tensors);
  await writeTensors(file, tensors, { format: 'pt' });
}

/** Expects the conversion to fail with a message matching every pattern, leaving nothing behind. */
async function expectFailure(modelDir: string, patterns: (string | RegExp)[], dtype?: 'float32'): Promise<Error> {
  const outputDir = outputPath();
  let caught: unknown;
  try {
    await convertCheckpoint({ modelDir, outputDir, dtype });
  } catch (error) {
    caught = error;
  }
  // Not toBeInstanceOf(Error): the addon's errors come from Node's realm, not Jest's sandbox.
  expect(typeof (caught as Error)?.message).toBe('string');
  const message = (caught as Error).message;
  for (const pattern of patterns) {
    if (typeof pattern === 'string') expect(message).toContain(pattern);
    else expect(message).toMatch(pattern);
  }
  await expectNothingLeft(outputDir);
  return caught as Error;
}

// An architecture that exercises every way a plan gathers tensors: concatenation (fused qkv),
// row slices (gate split in two halves around up) and a transpose (down stored [in, out]).
interface FusedConfig extends BaseModelConfig {
  hidden: number;
  inter: number;
  layers: number;
  qRows: number;
  kvRows: number;
}
const FUSED = 'KilnTestFusedForCausalLM';
registerArchitecture<FusedConfig>({
  name: FUSED,
  family: 'test',
  parseConfig(config, file) {
    const int = (key: string) => {
      const value = config[key];
      if (typeof value !== 'number') throw new ConfigError(file, key, 'required key is missing');
      return value;
    };
    const headDim = int('head_dim');
    return {
      vocabSize: int('vocab_size'),
      maxPositionEmbeddings: int('max_position_embeddings'),
      hidden: int('hidden_size'),
      inter: int('intermediate_size'),
      layers: int('num_hidden_layers'),
      qRows: int('num_attention_heads') * headDim,
      kvRows: int('num_key_value_heads') * headDim,
    };
  },
  checkpointTensors(c) {
    const plan: CheckpointTensorPlan[] = [
      { name: 'embed', shape: [c.vocabSize, c.hidden], sources: [{ tensor: 'model.embed_tokens.weight', shape: [c.vocabSize, c.hidden] }] },
    ];
    for (let i = 0; i < c.layers; i++) {
      const hf = `model.layers.${i}`;
      plan.push(
        {
          name: `layers.${i}.qkv`,
          shape: [c.qRows + 2 * c.kvRows, c.hidden],
          sources: [
            { tensor: `${hf}.self_attn.q_proj.weight`, shape: [c.qRows, c.hidden] },
            { tensor: `${hf}.self_attn.k_proj.weight`, shape: [c.kvRows, c.hidden] },
            { tensor: `${hf}.self_attn.v_proj.weight`, shape: [c.kvRows, c.hidden] },
          ],
        },
        {
          name: `layers.${i}.gate_up`,
          shape: [2 * c.inter, c.hidden],
          sources: [
            { tensor: `${hf}.mlp.gate_proj.weight`, shape: [c.inter, c.hidden], rowStart: 0, rowCount: c.inter / 2 },
            { tensor: `${hf}.mlp.up_proj.weight`, shape: [c.inter, c.hidden] },
            { tensor: `${hf}.mlp.gate_proj.weight`, shape: [c.inter, c.hidden], rowStart: c.inter / 2 },
          ],
        },
        {
          name: `layers.${i}.down_t`,
          shape: [c.inter, c.hidden],
          sources: [{ tensor: `${hf}.mlp.down_proj.weight`, shape: [c.hidden, c.inter], transpose: true }],
        },
      );
    }
    return plan;
  },
  // Everything this test architecture leaves out.
  ignoredTensors: [/norm/, /o_proj/, /^lm_head\./],
  buildNetwork() {
    throw new Error('not used by the converter');
  },
});

function cat(...parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

describe('convertCheckpoint with LlamaForCausalLM', () => {
  const arch = getArchitecture('LlamaForCausalLM');

  it('converts the tiny llama to float32 (its declared dtype): tensors, config, side files', async () => {
    const modelDir = await copyFixture('llama');
    const outputDir = outputPath();
    const progress: number[] = [];
    const result = await convertCheckpoint({ modelDir, outputDir, onProgress: (p) => progress.push(p.done) });
    expect(result.outputDir).toBe(outputDir);

    const hfConfig = JSON.parse(await fs.readFile(path.join(modelDir, 'config.json'), 'utf8'));
    const modelConfig = arch.parseConfig(hfConfig, 'config.json');
    const config = JSON.parse(await fs.readFile(path.join(outputDir, 'config.json'), 'utf8'));
    expect(config).toEqual(JSON.parse(JSON.stringify(result.config)));
    expect(config).toMatchObject({
      format: 'kiln-checkpoint',
      formatVersion: 1,
      architecture: 'LlamaForCausalLM',
      dtype: 'float32',
      mapping: { worldSize: 1, tpSize: 1, ppSize: 1 },
      generation: { bosTokenId: 1, eosTokenIds: [2], padTokenId: null },
    });
    expect(config.model).toEqual(JSON.parse(JSON.stringify(modelConfig)));

    expect((await fs.readdir(outputDir)).sort()).toEqual(
      ['config.json', 'generation_config.json', 'rank0.safetensors', 'tokenizer.json', 'tokenizer_config.json'].sort(),
    );
    expect(await fs.readFile(path.join(outputDir, 'tokenizer.json'))).toEqual(await fs.readFile(path.join(modelDir, 'tokenizer.json')));
    await expectNothingLeft(path.join(path.dirname(outputDir), 'nothing')); // no stray temp folders beside it
    expect((await fs.readdir(path.dirname(outputDir))).sort()).toEqual(['checkpoint']);

    const plan = arch.checkpointTensors(modelConfig);
    const header = await loadNative().readSafetensors(path.join(outputDir, 'rank0.safetensors'));
    expect(header.metadata).toEqual({ format: 'kiln-checkpoint' });
    expect(header.tensors.map((t) => t.name).sort()).toEqual(plan.map((p) => p.name).sort());
    const source = await readTensors(path.join(modelDir, 'model.safetensors'));
    const written = await readTensors(path.join(outputDir, 'rank0.safetensors'));
    for (const p of plan) {
      const t = written.get(p.name)!;
      expect(t.dtype).toBe('F32');
      expect(t.shape).toEqual(p.shape);
      expect(t.data.equals(source.get(p.sources[0].tensor)!.data)).toBe(true);
    }
    expect(progress[progress.length - 1]).toBe(plan.length);
  });

  it('casts to float16 and bfloat16 (round to nearest even)', async () => {
    const modelDir = await copyFixture('llama');
    const source = await readTensors(path.join(modelDir, 'model.safetensors'));

    const f16Dir = outputPath();
    const f16 = await convertCheckpoint({ modelDir, outputDir: f16Dir, dtype: 'float16' });
    expect(f16.config.dtype).toBe('float16');
    for (const [name, t] of await readTensors(path.join(f16Dir, 'rank0.safetensors'))) {
      expect(t.dtype).toBe('F16');
      const hfName = name === 'transformer.vocab_embedding.weight' ? 'model.embed_tokens.weight' : undefined;
      if (!hfName) continue;
      const expected = toFloat32(source.get(hfName)!);
      const actual = toFloat32(t);
      for (let i = 0; i < expected.length; i++) {
        expect(Math.abs(actual[i] - expected[i])).toBeLessThanOrEqual(Math.max(Math.abs(expected[i]) * 2 ** -11, 2 ** -25));
      }
    }

    const bf16Dir = outputPath();
    await convertCheckpoint({ modelDir, outputDir: bf16Dir, dtype: 'bfloat16' });
    const bf16 = await readTensors(path.join(bf16Dir, 'rank0.safetensors'));
    const norm = bf16.get('transformer.ln_f.weight')!;
    expect(norm.dtype).toBe('BF16');
    const embedding = bf16.get('transformer.vocab_embedding.weight')!;
    const expected = toFloat32(source.get('model.embed_tokens.weight')!);
    for (let i = 0; i < expected.length; i++) expect(embedding.data.readUInt16LE(i * 2)).toBe(bf16Bits(expected[i]));
  });

  it('keeps a bfloat16 checkpoint in bfloat16 by default, and widens it exactly to float32', async () => {
    const modelDir = await copyFixture('llama_bf16');
    const source = await readTensors(path.join(modelDir, 'model.safetensors'));
    const bfDir = outputPath();
    expect((await convertCheckpoint({ modelDir, outputDir: bfDir })).config.dtype).toBe('bfloat16');
    const kept = (await readTensors(path.join(bfDir, 'rank0.safetensors'))).get('lm_head.weight')!;
    expect(kept.dtype).toBe('BF16');
    expect(kept.data.equals(source.get('lm_head.weight')!.data)).toBe(true);

    const f32Dir = outputPath();
    await convertCheckpoint({ modelDir, outputDir: f32Dir, dtype: 'float32' });
    const widened = (await readTensors(path.join(f32Dir, 'rank0.safetensors'))).get('lm_head.weight')!;
    expect(Array.from(toFloat32(widened))).toEqual(Array.from(toFloat32(source.get('lm_head.weight')!)));
  });

  it('reads a sharded checkpoint (index.json) to the same bytes as the single file', async () => {
    const single = await copyFixture('llama');
    const sharded = await copyFixture('llama');
    const file = path.join(sharded, 'model.safetensors');
    const names = Object.keys((await readRaw(file)).header).sort();
    const native = loadNative();
    const shardNames = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
    const halves = [names.slice(0, 10), names.slice(10)];
    const header = await native.readSafetensors(file);
    const info = new Map(header.tensors.map((t) => [t.name, t]));
    const weightMap: Record<string, string> = {};
    for (let s = 0; s < 2; s++) {
      await native.writeSafetensors({
        path: path.join(sharded, shardNames[s]),
        metadata: { format: 'pt' },
        tensors: halves[s].map((name) => ({ name, dtype: 'float32', shape: info.get(name)!.shape, sources: [{ file, tensor: name }] })),
      });
      for (const name of halves[s]) weightMap[name] = shardNames[s];
    }
    await fs.rm(file);
    await fs.writeFile(path.join(sharded, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 1 }, weight_map: weightMap }));

    const a = outputPath();
    const b = outputPath();
    await convertCheckpoint({ modelDir: single, outputDir: a });
    await convertCheckpoint({ modelDir: sharded, outputDir: b });
    const fromSingle = await readTensors(path.join(a, 'rank0.safetensors'));
    const fromShards = await readTensors(path.join(b, 'rank0.safetensors'));
    expect([...fromShards.keys()].sort()).toEqual([...fromSingle.keys()].sort());
    for (const [name, t] of fromSingle) expect(fromShards.get(name)!.data.equals(t.data)).toBe(true);

    // The index must agree with the shards.
    const wrong = { ...weightMap, 'model.norm.weight': shardNames[0] === weightMap['model.norm.weight'] ? shardNames[1] : shardNames[0] };
    await fs.writeFile(path.join(sharded, 'model.safetensors.index.json'), JSON.stringify({ weight_map: wrong }));
    await expectFailure(sharded, ['model.safetensors.index.json', 'weight_map["model.norm.weight"]', 'has no tensor "model.norm.weight"']);
  });

  it('takes bos/eos/pad from generation_config.json over config.json; eos may be a list', async () => {
    const modelDir = await copyFixture('llama');
    await editConfig(modelDir, (c) => Object.assign(c, { pad_token_id: 0 }));
    await editConfig(modelDir, (c) => Object.assign(c, { eos_token_id: [2, 7, 2], bos_token_id: 3 }), 'generation_config.json');
    const { config } = await convertCheckpoint({ modelDir, outputDir: outputPath() });
    expect(config.generation).toEqual({ bosTokenId: 3, eosTokenIds: [2, 7], padTokenId: 0 });

    await editConfig(modelDir, (c) => Object.assign(c, { eos_token_id: 'two' }), 'generation_config.json');
    await expectFailure(modelDir, ['generation_config.json', 'eos_token_id', '"two"']);
  });

  it('replaces an earlier checkpoint atomically, and refuses to replace a folder that is not one', async () => {
    const modelDir = await copyFixture('llama');
    const outputDir = outputPath();
    await convertCheckpoint({ modelDir, outputDir, dtype: 'float32' });
    await convertCheckpoint({ modelDir, outputDir, dtype: 'bfloat16' });
    expect((await readKilnCheckpoint(outputDir)).config.dtype).toBe('bfloat16');
    expect(await fs.readdir(path.dirname(outputDir))).toEqual(['checkpoint']);

    const precious = path.join(root, `precious-${counter++}`);
    await fs.mkdir(precious);
    await fs.writeFile(path.join(precious, 'notes.txt'), 'keep me');
    await expect(convertCheckpoint({ modelDir, outputDir: precious })).rejects.toThrow(/precious-\d+: exists and is not a Kiln checkpoint/);
    expect(await fs.readdir(precious)).toEqual(['notes.txt']);
    await expect(convertCheckpoint({ modelDir, outputDir: modelDir })).rejects.toThrow(/must not be the model folder/);
  });
});

describe('every vendored LLaMA-family fixture converts', () => {
  it.each(['llama', 'llama_bf16', 'llama3_scaled_rope', 'mistral', 'qwen2', 'qwen2_bf16'])('%s', async (name) => {
    const modelDir = await copyFixture(name);
    const hfConfig = JSON.parse(await fs.readFile(path.join(modelDir, 'config.json'), 'utf8'));
    const arch = getArchitecture(hfConfig.architectures[0]);
    const outputDir = outputPath();
    const { config } = await convertCheckpoint({ modelDir, outputDir });
    expect(config.dtype).toBe(hfConfig.dtype);
    const plan = arch.checkpointTensors(arch.parseConfig(hfConfig, 'config.json'));
    const written = await readTensors(path.join(outputDir, 'rank0.safetensors'));
    expect([...written.keys()].sort()).toEqual(plan.map((p) => p.name).sort());
    for (const p of plan) expect(written.get(p.name)!.shape).toEqual(p.shape);
    expect((await readKilnCheckpoint(outputDir)).config).toEqual(JSON.parse(JSON.stringify(config)));
  });
});

describe('convertCheckpoint gathering: concatenation, row slices, transpose', () => {
  it('writes what the plan describes', async () => {
    const modelDir = await copyFixture('llama');
    await editConfig(modelDir, (c) => (c.architectures = [FUSED]));
    const outputDir = outputPath();
    const { config } = await convertCheckpoint({ modelDir, outputDir, dtype: 'float32' });
    expect(config.architecture).toBe(FUSED);
    const source = await readTensors(path.join(modelDir, 'model.safetensors'));
    const written = await readTensors(path.join(outputDir, 'rank0.safetensors'));
    const f = (name: string) => toFloat32(source.get(name)!);
    const hf = 'model.layers.1';
    expect(written.get('layers.1.qkv')!.shape).toEqual([128, 64]);
    expect(Array.from(toFloat32(written.get('layers.1.qkv')!))).toEqual(
      Array.from(cat(f(`${hf}.self_attn.q_proj.weight`), f(`${hf}.self_attn.k_proj.weight`), f(`${hf}.self_attn.v_proj.weight`))),
    );
    const gate = f(`${hf}.mlp.gate_proj.weight`);
    expect(Array.from(toFloat32(written.get('layers.1.gate_up')!))).toEqual(
      Array.from(cat(gate.subarray(0, 64 * 64), f(`${hf}.mlp.up_proj.weight`), gate.subarray(64 * 64))),
    );
    expect(Array.from(toFloat32(written.get('layers.1.down_t')!))).toEqual(Array.from(transpose(f(`${hf}.mlp.down_proj.weight`), 64, 128)));
  });
});

describe('convertCheckpoint refuses bad input, naming the culprit and leaving nothing behind', () => {
  it('a missing model folder', async () => {
    await expectFailure(path.join(root, 'no-such-model'), ['no-such-model: model folder not found']);
  });

  it('config.json missing, invalid JSON, not an object, without architectures', async () => {
    const modelDir = await copyFixture('llama');
    const configPath = path.join(modelDir, 'config.json');
    const text = await fs.readFile(configPath, 'utf8');
    await fs.rm(configPath);
    await expectFailure(modelDir, [`${configPath}: file not found`]);
    await fs.writeFile(configPath, text.slice(0, 100));
    await expectFailure(modelDir, [`${configPath}: invalid JSON`]);
    await fs.writeFile(configPath, '[1, 2]');
    await expectFailure(modelDir, [`${configPath}: expected a JSON object`]);
    await fs.writeFile(configPath, JSON.stringify({ ...JSON.parse(text), architectures: undefined }));
    const error = await expectFailure(modelDir, [`${configPath}: architectures: missing`]);
    expect(error).toBeInstanceOf(ConfigError);
    await fs.writeFile(configPath, JSON.stringify({ ...JSON.parse(text), architectures: [] }));
    await expectFailure(modelDir, [`${configPath}: architectures: expected a non-empty list`]);
  });

  it('a config without a required key', async () => {
    const modelDir = await copyFixture('llama');
    await editConfig(modelDir, (c) => delete c.hidden_size);
    const error = await expectFailure(modelDir, [path.join(modelDir, 'config.json'), 'hidden_size']);
    expect(error).toBeInstanceOf(ConfigError);
  });

  it('an unsupported architecture, listing the supported ones', async () => {
    const modelDir = await copyFixture('llama');
    await editConfig(modelDir, (c) => (c.architectures = ['FrobnicatorForCausalLM']));
    const error = await expectFailure(modelDir, ['"FrobnicatorForCausalLM"', 'LlamaForCausalLM', 'Qwen2ForCausalLM', 'config.json']);
    expect(error).toBeInstanceOf(UnsupportedArchitectureError);
  });

  it('a bad dtype option', async () => {
    const modelDir = await copyFixture('llama');
    await expect(convertCheckpoint({ modelDir, outputDir: outputPath(), dtype: 'int8' as never })).rejects.toThrow(
      'dtype: expected one of float32, float16, bfloat16, got "int8"',
    );
  });

  it('no weights at all', async () => {
    const modelDir = await copyFixture('llama');
    await fs.rm(path.join(modelDir, 'model.safetensors'));
    await expectFailure(modelDir, [`no model.safetensors or model.safetensors.index.json in ${modelDir}`]);
  });

  describe('corrupt safetensors (the native reader\'s message, naming the file)', () => {
    async function corrupt(edit: (bytes: Buffer) => Buffer): Promise<[string, string]> {
      const modelDir = await copyFixture('llama');
      const file = path.join(modelDir, 'model.safetensors');
      await fs.writeFile(file, edit(await fs.readFile(file)));
      return [modelDir, file];
    }

    it('truncated', async () => {
      const [modelDir, file] = await corrupt((b) => b.subarray(0, b.length / 2));
      await expectFailure(modelDir, [file]);
    });

    it('shorter than its length prefix', async () => {
      const [modelDir, file] = await corrupt((b) => b.subarray(0, 5));
      await expectFailure(modelDir, [file]);
    });

    it('header length past the end', async () => {
      const [modelDir, file] = await corrupt((b) => {
        const copy = Buffer.from(b);
        copy.writeBigUInt64LE(BigInt(b.length + 100), 0);
        return copy;
      });
      await expectFailure(modelDir, [file]);
    });

    async function editHeader(edit: (raw: Awaited<ReturnType<typeof readRaw>>) => void): Promise<[string, string]> {
      const modelDir = await copyFixture('llama');
      const file = path.join(modelDir, 'model.safetensors');
      const raw = await readRaw(file);
      edit(raw);
      await writeRaw(file, raw);
      return [modelDir, file];
    }

    it('overlapping offsets', async () => {
      const [modelDir, file] = await editHeader((raw) => {
        const k = raw.header['model.layers.0.self_attn.k_proj.weight'];
        const v = raw.header['model.layers.0.self_attn.v_proj.weight'];
        v.data_offsets = [k.data_offsets[0], k.data_offsets[1]];
      });
      await expectFailure(modelDir, [file]);
    });

    it('offsets past the file', async () => {
      const [modelDir, file] = await editHeader((raw) => {
        const last = Object.values(raw.header).sort((a, b) => b.data_offsets[1] - a.data_offsets[1])[0];
        last.data_offsets = [last.data_offsets[0] + 256, last.data_offsets[1] + 256];
      });
      await expectFailure(modelDir, [file]);
    });

    it('a shape that does not match its bytes', async () => {
      const [modelDir, file] = await editHeader((raw) => {
        raw.header['model.norm.weight'].shape = [65];
      });
      await expectFailure(modelDir, [file, 'model.norm.weight']);
    });

    it('a dtype that does not match its bytes', async () => {
      const [modelDir, file] = await editHeader((raw) => {
        raw.header['model.norm.weight'].dtype = 'F16';
      });
      await expectFailure(modelDir, [file, 'model.norm.weight']);
    });
  });

  it('a missing tensor, with its expected shape', async () => {
    const modelDir = await copyFixture('llama');
    await editTensors(modelDir, (t) => t.delete('model.layers.1.mlp.up_proj.weight'));
    await expectFailure(modelDir, [`${modelDir}: missing tensor "model.layers.1.mlp.up_proj.weight" (expected shape [128, 64])`]);
  });

  it('an extra tensor', async () => {
    const modelDir = await copyFixture('llama');
    await editTensors(modelDir, (t) => t.set('model.layers.0.self_attn.q_norm.weight', { dtype: 'F32', shape: [16], data: Buffer.alloc(64) }));
    await expectFailure(modelDir, [
      `unexpected tensor "model.layers.0.self_attn.q_norm.weight" [16] in ${path.join(modelDir, 'model.safetensors')}: ` +
        'not part of LlamaForCausalLM with this config',
    ]);
  });

  it('a wrong shape, naming the tensor and both shapes', async () => {
    const modelDir = await copyFixture('llama');
    await editTensors(modelDir, (t) => {
      const k = t.get('model.layers.1.self_attn.k_proj.weight')!;
      t.set('model.layers.1.self_attn.k_proj.weight', { dtype: 'F32', shape: [16, 64], data: k.data.subarray(0, 16 * 64 * 4) });
    });
    await expectFailure(modelDir, [
      `${path.join(modelDir, 'model.safetensors')}: tensor "model.layers.1.self_attn.k_proj.weight" has shape [16, 64] but the config implies [32, 64]`,
    ]);
  });

  it('a tensor of a dtype that is not a float weight', async () => {
    const modelDir = await copyFixture('llama');
    await editTensors(modelDir, (t) => {
      t.get('model.norm.weight')!.dtype = 'I32';
    });
    await expectFailure(modelDir, ['tensor "model.norm.weight" has dtype I32; only F32, F16 and BF16']);
  });

  describe('model.safetensors.index.json', () => {
    async function shardedCopy(weightMap: unknown): Promise<string> {
      const modelDir = await copyFixture('llama');
      await fs.rename(path.join(modelDir, 'model.safetensors'), path.join(modelDir, 'model-00001-of-00001.safetensors'));
      await fs.writeFile(path.join(modelDir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: weightMap }));
      return modelDir;
    }

    it('path traversal and absolute paths', async () => {
      const outside = path.join(root, `outside-${counter++}.safetensors`);
      await fs.copyFile(path.join(FIXTURES, 'llama', 'model.safetensors'), outside);
      for (const shard of [`../${path.basename(outside)}`, outside, '..', 'sub/model.safetensors']) {
        const modelDir = await shardedCopy({ 'model.norm.weight': shard });
        await expectFailure(modelDir, [
          'model.safetensors.index.json: weight_map["model.norm.weight"]',
          `${JSON.stringify(shard)} is not a plain file name inside the model folder`,
        ]);
      }
    });

    it('a weight_map that is not a map of names, or names a missing shard', async () => {
      await expectFailure(await shardedCopy(['a']), ['model.safetensors.index.json: weight_map: expected an object']);
      await expectFailure(await shardedCopy({ 'model.norm.weight': 3 }), ['weight_map["model.norm.weight"]: expected a shard file name, got 3']);
      await expectFailure(await shardedCopy({ 'model.norm.weight': 'model-2.safetensors' }), [
        'weight_map["model.norm.weight"]: shard file "model-2.safetensors" not found',
      ]);
    });

    it('a tensor in two shards', async () => {
      const modelDir = await shardedCopy({ 'model.norm.weight': 'model-00001-of-00001.safetensors', 'lm_head.weight': 'copy.safetensors' });
      await fs.copyFile(path.join(modelDir, 'model-00001-of-00001.safetensors'), path.join(modelDir, 'copy.safetensors'));
      await expectFailure(modelDir, ['copy.safetensors: tensor "', 'is also in', 'model-00001-of-00001.safetensors']);
    });
  });
});

describe('readKilnCheckpoint', () => {
  let checkpoint: string;
  beforeAll(async () => {
    checkpoint = outputPath();
    await convertCheckpoint({ modelDir: await copyFixture('qwen2'), outputDir: checkpoint });
  });

  it('reads what convertCheckpoint wrote', async () => {
    const { config, weightsFile } = await readKilnCheckpoint(checkpoint);
    expect(config.architecture).toBe('Qwen2ForCausalLM');
    expect(config.generation).toEqual({ bosTokenId: null, eosTokenIds: [], padTokenId: null });
    expect(weightsFile).toBe(path.join(checkpoint, 'rank0.safetensors'));
  });

  async function withConfig(edit: (config: Record<string, unknown>) => void): Promise<string> {
    const dir = path.join(root, `ckpt-${counter++}`);
    await fs.mkdir(dir);
    for (const file of await fs.readdir(checkpoint)) await fs.copyFile(path.join(checkpoint, file), path.join(dir, file));
    await editConfig(dir, edit);
    return dir;
  }

  it.each([
    ['format', (c: Record<string, unknown>) => (c.format = 'pt'), 'format: expected "kiln-checkpoint"'],
    ['formatVersion', (c: Record<string, unknown>) => (c.formatVersion = 2), 'formatVersion: expected 1, got 2'],
    ['architecture', (c: Record<string, unknown>) => (c.architecture = 'NopeForCausalLM'), 'unsupported architecture "NopeForCausalLM"'],
    ['dtype', (c: Record<string, unknown>) => (c.dtype = 'int4'), 'dtype: expected one of float32, float16, bfloat16, got "int4"'],
    ['mapping', (c: Record<string, unknown>) => (c.mapping = { worldSize: 2, tpSize: 1, ppSize: 1 }), 'mapping.worldSize: 2 is not tpSize * ppSize'],
    ['generation', (c: Record<string, unknown>) => (c.generation = { bosTokenId: -1, eosTokenIds: [], padTokenId: null }), 'generation.bosTokenId'],
  ])('rejects a bad %s', async (_key, edit, message) => {
    const dir = await withConfig(edit);
    await expect(readKilnCheckpoint(dir)).rejects.toThrow(`${path.join(dir, 'config.json')}: `);
    await expect(readKilnCheckpoint(dir)).rejects.toThrow(message);
  });

  it('rejects a Hugging Face folder and a checkpoint without weights', async () => {
    const hf = await copyFixture('llama');
    await expect(readKilnCheckpoint(hf)).rejects.toThrow('run `kiln convert` first');
    const dir = await withConfig(() => undefined);
    await fs.rm(path.join(dir, 'rank0.safetensors'));
    await expect(readKilnCheckpoint(dir)).rejects.toThrow(`${path.join(dir, 'rank0.safetensors')}: file not found`);
  });
});
