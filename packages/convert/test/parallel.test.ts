// The split rules of tensor and pipeline parallelism (parallel.ts), and shardCheckpoint writing one
// weights file per rank (with the real native writer), on the llama and mixtral fixtures.
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { convertCheckpoint, readKilnCheckpoint, shardCheckpoint, splitRole, stageLayers, stageOf, tensorShard, type ParallelFacts } from '@kiln/convert';
import { loadNative } from '@kiln/native';

const REPO = path.resolve(__dirname, '..', '..', '..');
const facts: ParallelFacts = { numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16, vocabSize: 512, numExperts: 0 };

test('roles by canonical name', () => {
  expect(splitRole('transformer.layers.3.attention.q.weight')).toBe('heads-q');
  expect(splitRole('transformer.layers.3.attention.v.bias')).toBe('heads-kv');
  expect(splitRole('transformer.layers.3.attention.dense.weight')).toBe('row');
  expect(splitRole('transformer.layers.3.mlp.proj.bias')).toBe('row-bias');
  expect(splitRole('transformer.layers.3.mlp.gate.weight')).toBe('column');
  expect(splitRole('transformer.layers.3.mlp.experts.proj.weight')).toBe('experts-row');
  expect(splitRole('lm_head.weight')).toBe('vocab');
  expect(splitRole('transformer.layers.3.input_layernorm.weight')).toBe('replicated');
  expect(splitRole('transformer.vocab_embedding.weight')).toBe('vocab');
  expect(splitRole('transformer.position_embedding.weight')).toBe('replicated');
});

test('shards: heads, KV heads kept whole below tp, row-parallel columns, biases added once, experts', () => {
  expect(tensorShard('transformer.layers.0.attention.q.weight', [64, 64], facts, 2, 1)).toEqual({ shape: [32, 64], ranges: [{ dim: 0, start: 32, count: 32 }] });
  expect(tensorShard('transformer.layers.0.attention.k.weight', [32, 64], facts, 2, 1)).toEqual({ shape: [16, 64], ranges: [{ dim: 0, start: 16, count: 16 }] });
  // tp 4 over 2 KV heads: ranks 0-1 keep KV head 0, ranks 2-3 KV head 1.
  expect(tensorShard('transformer.layers.0.attention.k.weight', [32, 64], facts, 4, 1)?.ranges).toEqual([{ dim: 0, start: 0, count: 16 }]);
  expect(tensorShard('transformer.layers.0.attention.k.weight', [32, 64], facts, 4, 2)?.ranges).toEqual([{ dim: 0, start: 16, count: 16 }]);
  expect(tensorShard('transformer.layers.0.mlp.proj.weight', [64, 128], facts, 2, 1)).toEqual({ shape: [64, 64], ranges: [{ dim: 1, start: 64, count: 64 }] });
  expect(tensorShard('transformer.layers.0.mlp.proj.bias', [64], facts, 2, 0)?.shape).toEqual([64]);
  expect(tensorShard('transformer.layers.0.mlp.proj.bias', [64], facts, 2, 1)).toBeNull();
  const moe = { ...facts, numExperts: 4 };
  expect(tensorShard('transformer.layers.0.mlp.experts.fc.weight', [4 * 32, 64], moe, 2, 1)?.ranges).toEqual([0, 1, 2, 3].map((e) => ({ dim: 0, start: e * 32 + 16, count: 16 })));
  expect(tensorShard('lm_head.weight', [512, 64], facts, 2, 1)?.ranges).toEqual([{ dim: 0, start: 256, count: 256 }]);
  expect(tensorShard('lm_head.weight', [511, 64], { ...facts, vocabSize: 511 }, 2, 1)?.ranges).toEqual([]);  // kept whole
});

test('stages: consecutive layers, the first stages taking the remainder; embeddings first, head last', () => {
  expect([0, 1, 2].map((s) => stageLayers(7, 3, s))).toEqual([[0, 3], [3, 5], [5, 7]]);
  expect(stageOf('transformer.layers.4.mlp.fc.weight', 7, 3)).toBe(1);
  expect(stageOf('transformer.vocab_embedding.weight', 7, 3)).toBe(0);
  expect(stageOf('transformer.ln_f.weight', 7, 3)).toBe(2);
  expect(stageOf('lm_head.weight', 7, 3)).toBe(2);
});

describe('convertCheckpoint with tpSize / ppSize', () => {
  let tmpDir: string;
  beforeAll(() => {
    tmpDir = mkdtempSync(path.join(os.tmpdir(), 'kiln-shard-'));
  });
  afterAll(() => rmSync(tmpDir, { recursive: true, force: true }));

  test('tp 2 x pp 2 on llama: four weights files, each rank its stage and its split', async () => {
    const outputDir = path.join(tmpDir, 'llama-tp2-pp2');
    const result = await convertCheckpoint({ modelDir: path.join(REPO, 'fixtures/hf-tiny/llama'), outputDir, tpSize: 2, ppSize: 2 });
    expect(result.config.mapping).toEqual({ worldSize: 4, tpSize: 2, ppSize: 2 });
    const checkpoint = await readKilnCheckpoint(outputDir);
    expect(checkpoint.weightsFiles.map((f) => path.basename(f))).toEqual(['rank0.safetensors', 'rank1.safetensors', 'rank2.safetensors', 'rank3.safetensors']);
    const tensors = async (rank: number) =>
      Object.fromEntries((await loadNative().readSafetensors(checkpoint.weightsFiles[rank])).tensors.map((t) => [t.name, t.shape]));
    const rank1 = await tensors(1);
    expect(rank1['transformer.vocab_embedding.weight']).toEqual([256, 64]);
    expect(rank1['transformer.layers.0.attention.q.weight']).toEqual([32, 64]);
    expect(rank1['transformer.layers.0.mlp.proj.weight']).toEqual([64, 64]);
    expect(rank1['transformer.layers.1.attention.q.weight']).toBeUndefined();
    expect(rank1['lm_head.weight']).toBeUndefined();
    const rank3 = await tensors(3);
    expect(rank3['transformer.layers.1.attention.q.weight']).toEqual([32, 64]);
    expect(rank3['lm_head.weight']).toEqual([256, 64]);
    expect(rank3['transformer.ln_f.weight']).toEqual([64]);
    expect(rank3['transformer.vocab_embedding.weight']).toBeUndefined();
  });

  test('mappings that do not fit are refused before anything is written, naming the model config', async () => {
    const modelDir = path.join(REPO, 'fixtures/hf-tiny/llama');
    const outputDir = path.join(tmpDir, 'refused');
    await expect(convertCheckpoint({ modelDir, outputDir, tpSize: 3 })).rejects.toThrow(/llama\/config\.json: tp 3 x pp 1 does not fit this model: tp 3 does not divide the 4 attention heads/);
    await expect(convertCheckpoint({ modelDir, outputDir, ppSize: 3 })).rejects.toThrow(/pp 3 exceeds the 2 layers/);
    await expect(convertCheckpoint({ modelDir, outputDir, tpSize: 0 })).rejects.toThrow(/tpSize: expected an integer in \[1, 4096\], got 0/);
    await expect(readKilnCheckpoint(outputDir)).rejects.toThrow(/not found/);
  });

  test('a sharded checkpoint missing a rank file is refused naming it', async () => {
    const outputDir = path.join(tmpDir, 'incomplete');
    await convertCheckpoint({ modelDir: path.join(REPO, 'fixtures/hf-tiny/llama'), outputDir, tpSize: 2 });
    rmSync(path.join(outputDir, 'rank1.safetensors'));
    await expect(readKilnCheckpoint(outputDir)).rejects.toThrow(/rank1\.safetensors: file not found/);
    await expect(shardCheckpoint({ checkpointDir: outputDir, outputDir: path.join(tmpDir, 'again'), tpSize: 2 })).rejects.toThrow();
  });
});
