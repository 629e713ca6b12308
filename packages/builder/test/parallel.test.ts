// partitionForRank: one rank's network of a tensor/pipeline-parallel engine, from the whole network of
// the llama and mixtral fixtures' configs (no native code: the graph only). The end-to-end equality with
// the single-rank engine is in packages/runtime/test/parallel.test.ts, under mpirun.
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { Graph, partitionForRank } from '@kiln/builder';
import { parallelFacts } from '@kiln/convert';
import { getArchitecture } from '@kiln/models';

const REPO = path.resolve(__dirname, '..', '..', '..');

function network(fixture: string, overrides: Record<string, unknown> = {}) {
  const file = path.join(REPO, 'fixtures/hf-tiny', fixture, 'config.json');
  const json = { ...JSON.parse(readFileSync(file, 'utf8')), ...overrides };
  const arch = getArchitecture(json.architectures[0]);
  return arch.buildNetwork(arch.parseConfig(json, file) as never).toJSON();
}

function rankGraph(fixture: string, tpSize: number, ppSize: number, rank: number, overrides: Record<string, unknown> = {}) {
  const json = network(fixture, overrides);
  const graph = new Graph(json);
  partitionForRank(graph, parallelFacts(json), { tpSize, ppSize, rank });
  return graph;
}

const opsOf = (graph: Graph, op: string) => graph.nodes.filter((node) => node.op === op);
const parameter = (graph: Graph, name: string) => [...graph.values.values()].find((v) => v.kind === 'parameter' && v.name === name);

describe('tensor parallelism (llama fixture: 4 heads, 2 KV heads of 16, MLP 128, vocab 512, 2 layers)', () => {
  test('each rank holds half the heads and half the MLP; row-parallel outputs are all-reduced, the LM head all-gathered', () => {
    const graph = rankGraph('llama', 2, 1, 1);
    for (const node of opsOf(graph, 'attention')) expect(node.attrs).toMatchObject({ numHeads: 2, numKvHeads: 1, headDim: 16 });
    expect(opsOf(graph, 'rope').map((n) => n.attrs.numHeads)).toEqual([2, 1, 2, 1]);
    expect(parameter(graph, 'transformer.layers.0.attention.q.weight')?.shape).toEqual([32, 64]);
    expect(parameter(graph, 'transformer.layers.0.attention.k.weight')?.shape).toEqual([16, 64]);
    expect(parameter(graph, 'transformer.layers.0.attention.dense.weight')?.shape).toEqual([64, 32]);
    expect(parameter(graph, 'transformer.layers.0.mlp.gate.weight')?.shape).toEqual([64, 64]);
    expect(parameter(graph, 'transformer.layers.0.mlp.proj.weight')?.shape).toEqual([64, 64]);
    expect(parameter(graph, 'lm_head.weight')?.shape).toEqual([256, 64]);
    expect(opsOf(graph, 'all_reduce')).toHaveLength(5);  // the embedding, dense and proj of 2 layers
    const embedding = opsOf(graph, 'vocab_parallel_embedding');
    expect(embedding.map((n) => n.attrs.vocabStart)).toEqual([256]);
    expect(parameter(graph, 'transformer.vocab_embedding.weight')?.shape).toEqual([256, 64]);
    expect(graph.consumers(embedding[0].outputs[0]).map((n) => n.op)).toEqual(['all_reduce']);
    const gather = opsOf(graph, 'all_gather');
    expect(gather).toHaveLength(1);
    expect(gather[0].outputs[0]).toBe(graph.outputs.logits);
    expect(graph.value(graph.outputs.logits).shape).toEqual(['logitRows', 512]);
    // Every other all-reduce reads a row-parallel linear's partial sum, full width.
    for (const node of opsOf(graph, 'all_reduce').slice(1)) {
      expect(graph.producer(node.inputs[0])?.op).toBe('linear');
      expect(graph.features(node.inputs[0])).toBe(64);
    }
  });

  test('fewer KV heads than ranks: each rank keeps the KV head its query heads read', () => {
    const graph = rankGraph('llama', 4, 1, 3);
    for (const node of opsOf(graph, 'attention')) expect(node.attrs).toMatchObject({ numHeads: 1, numKvHeads: 1 });
    expect(parameter(graph, 'transformer.layers.1.attention.v.weight')?.shape).toEqual([16, 64]);
  });

  test('MoE: every expert split by tp, the block all-reduced', () => {
    const graph = rankGraph('mixtral', 2, 1, 0);
    const moe = opsOf(graph, 'moe');
    expect(moe.length).toBeGreaterThan(0);
    for (const node of moe) expect(graph.consumers(node.outputs[0]).map((n) => n.op)).toEqual(['all_reduce']);
  });
});

describe('pipeline parallelism (llama fixture, 2 stages of 1 layer)', () => {
  test('stage 0: embedding and layer 0, sends the hidden state, receives the logits', () => {
    const graph = rankGraph('llama', 1, 2, 0);
    expect(graph.nodes[0].op).toBe('embedding');  // tp 1: the whole table
    expect(opsOf(graph, 'attention').map((n) => n.attrs.layer)).toEqual([0]);
    const send = opsOf(graph, 'send');
    expect(send.map((n) => n.attrs.peer)).toEqual([1]);
    const last = graph.nodes[graph.nodes.length - 1];
    expect(last).toMatchObject({ op: 'recv', attrs: { peer: 1 } });
    expect(last.outputs).toEqual([graph.outputs.logits]);
    expect(parameter(graph, 'lm_head.weight')).toBeDefined();  // declared, read by no node of this stage
    expect(graph.nodes.some((n) => n.inputs.includes(parameter(graph, 'lm_head.weight')!.id))).toBe(false);
  });

  test('stage 1: receives the hidden state, runs layer 1 (its KV layer 0), the head, and sends the logits to rank 0', () => {
    const graph = rankGraph('llama', 1, 2, 1);
    expect(graph.nodes[0]).toMatchObject({ op: 'recv', attrs: { peer: 0 } });
    expect(opsOf(graph, 'embedding')).toHaveLength(0);
    expect(opsOf(graph, 'attention').map((n) => n.attrs.layer)).toEqual([0]);
    expect(graph.nodes.some((n) => n.inputs.some((id) => graph.value(id).name === 'transformer.layers.1.attention.q.weight'))).toBe(true);
    const last = graph.nodes[graph.nodes.length - 1];
    expect(last).toMatchObject({ op: 'send', attrs: { peer: 0 }, inputs: [graph.outputs.logits] });
  });

  test('tp 2 x pp 2: rank 1 (stage 0, tp rank 1) computes no logits; rank 3 sends none', () => {
    const rank1 = rankGraph('llama', 2, 2, 1);
    expect(rank1.outputs.logits).toBeUndefined();
    expect(opsOf(rank1, 'send').map((n) => n.attrs.peer)).toEqual([3]);
    const rank3 = rankGraph('llama', 2, 2, 3);
    expect(opsOf(rank3, 'recv').map((n) => n.attrs.peer)).toEqual([1]);
    expect(opsOf(rank3, 'send')).toHaveLength(0);
    expect(opsOf(rank3, 'all_gather')).toHaveLength(1);
  });
});
