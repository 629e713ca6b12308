// One rank's network of a tensor- and pipeline-parallel engine, made from the whole network's graph with
// the split rules of @kiln/convert's parallel.ts (the same rules wrote that rank's weights):
// - pipeline: the rank keeps its stage's nodes; the hidden state entering the stage comes from `recv`
//   (from the same tp rank of the previous stage), the one leaving it goes out by `send`; rank 0 gets
//   the logits from the last stage by `recv`, and only rank 0 keeps a logits output;
// - tensor: parameters take their shard's shape, activations follow, attention and rope take their
//   local head counts, row-parallel linears, MoE blocks and the vocabulary-split embedding are followed
//   by `all_reduce`, and a vocabulary-split LM head by `all_gather`.
// Architecture-agnostic: stages are found from the parameters' layer numbers and the graph's dataflow,
// and an activation that would cross stages anywhere but at one hidden state is an error.
import { LM_HEAD_WEIGHT, MappingError, splitRole, splitsVocabulary, stageLayers, tensorShard, type ParallelFacts } from '@kiln/convert';
import type { Graph, GraphNode } from './graph';

export interface RankMapping {
  tpSize: number;
  ppSize: number;
  rank: number;
}

const LAYER_PARAMETER = /^transformer\.layers\.(\d+)\./;
const LAST_STAGE_PARAMETER = /^(lm_head|transformer\.ln_f)\./;

/** Reshapes `graph` (the whole network) in place into rank `mapping.rank`'s part of it. */
export function partitionForRank(graph: Graph, facts: ParallelFacts, mapping: RankMapping): void {
  useLmHeadWeight(graph);
  if (mapping.ppSize > 1) cutPipelineStage(graph, facts, mapping);
  if (mapping.tpSize > 1) splitTensors(graph, facts, mapping);
}

/** The linear that computes the logits (directly, or under a softcap), if this graph has it. */
function logitsLinear(graph: Graph): GraphNode | undefined {
  let id: number | undefined = graph.outputs.logits;
  for (let hops = 0; hops < 4 && id !== undefined; hops++) {
    const producer = graph.producer(id);
    if (!producer) break;
    if (producer.op === 'linear') return producer;
    id = producer.inputs[0];
  }
  return undefined;
}

/** Sharded checkpoints hold the LM head as lm_head.weight even for tied models (convert's shard.ts). */
function useLmHeadWeight(graph: Graph): void {
  const head = logitsLinear(graph);
  if (!head) throw new MappingError('the network has no linear LM head');
  const weight = graph.value(head.inputs[1]);
  if (weight.name === LM_HEAD_WEIGHT) return;
  const copy = graph.addValue({ dtype: weight.dtype, shape: [...weight.shape], kind: 'parameter', name: LM_HEAD_WEIGHT, sources: [LM_HEAD_WEIGHT] });
  head.inputs[1] = copy.id;
}

function cutPipelineStage(graph: Graph, facts: ParallelFacts, mapping: RankMapping): void {
  const { tpSize, ppSize, rank } = mapping;
  const ppRank = Math.floor(rank / tpSize);
  const [first, end] = stageLayers(facts.numLayers, ppSize, ppRank);
  const stageOfLayer = (layer: number) => {
    if (layer < 0) return 0;
    if (layer >= facts.numLayers) return ppSize - 1;
    for (let s = 0; s < ppSize; s++) {
      const [a, b] = stageLayers(facts.numLayers, ppSize, s);
      if (layer >= a && layer < b) return s;
    }
    return ppSize - 1;
  };
  // A node's layer: its parameters' layer; before the layers (-1) for other parameters but the final
  // norm and head (numLayers); otherwise the latest layer among its inputs' producers.
  const layerOfValue = new Map<number, number>();
  const stageOfNode = new Map<GraphNode, number>();
  for (const node of graph.nodes) {
    let layer = Number.NEGATIVE_INFINITY;
    for (const id of node.inputs) {
      const value = graph.value(id);
      if (value.kind === 'parameter' && value.name) {
        const match = LAYER_PARAMETER.exec(value.name);
        layer = Math.max(layer, match ? Number(match[1]) : LAST_STAGE_PARAMETER.test(value.name) ? facts.numLayers : -1);
      } else if (value.kind === 'value') {
        layer = Math.max(layer, layerOfValue.get(id) ?? -1);
      }
    }
    if (layer === Number.NEGATIVE_INFINITY) layer = -1;
    for (const id of node.outputs) layerOfValue.set(id, layer);
    stageOfNode.set(node, stageOfLayer(layer));
  }
  const producerStage = (id: number) => {
    const producer = graph.producer(id);
    return producer ? stageOfNode.get(producer) : undefined;
  };
  const kept = graph.nodes.filter((node) => stageOfNode.get(node) === ppRank);
  const incoming = new Set<number>();
  const outgoing = new Set<number>();
  for (const node of graph.nodes) {
    const stage = stageOfNode.get(node) as number;
    for (const id of node.inputs) {
      const from = producerStage(id);
      if (from === undefined || from === stage) continue;
      if (from > stage || stage - from !== 1) {
        throw new MappingError(`pipeline: ${graph.value(id).name ?? `value %${id}`} flows from stage ${from} to stage ${stage}; only neighbouring stages exchange activations`);
      }
      if (stage === ppRank) incoming.add(id);
      if (from === ppRank) outgoing.add(id);
    }
  }
  if ((ppRank > 0 && incoming.size !== 1) || (ppRank < ppSize - 1 && outgoing.size !== 1)) {
    throw new MappingError(
      `pipeline: stage ${ppRank} (layers ${first}..${end - 1}) receives ${incoming.size} and sends ${outgoing.size} activations; ` +
        'a stage boundary must cross exactly one hidden state',
    );
  }
  const logits = graph.outputs.logits;
  const nodes: GraphNode[] = [];
  for (const id of incoming) nodes.push({ op: 'recv', inputs: [], outputs: [id], attrs: { peer: rank - tpSize } });
  nodes.push(...kept);
  for (const id of outgoing) nodes.push({ op: 'send', inputs: [id], outputs: [], attrs: { peer: rank + tpSize } });
  const lastStageRank0 = (ppSize - 1) * tpSize;
  if (rank === lastStageRank0) nodes.push({ op: 'send', inputs: [logits], outputs: [], attrs: { peer: 0 } });
  if (rank === 0) {
    const received = graph.addValue({ dtype: 'float32', shape: [...graph.value(logits).shape], kind: 'value', name: 'logits' });
    nodes.push({ op: 'recv', inputs: [], outputs: [received.id], attrs: { peer: lastStageRank0 } });
    graph.outputs.logits = received.id;
  } else if (ppRank !== ppSize - 1) {
    delete graph.outputs.logits;
  }
  graph.nodes = nodes;
  // Each stage's KV cache holds its own layers: attention layers are renumbered from 0.
  for (const node of graph.nodes) {
    if (node.op === 'attention') node.attrs = { ...node.attrs, layer: Number(node.attrs.layer) - first };
  }
}

function features(graph: Graph, id: number): number {
  return graph.features(id);
}

function setFeatures(graph: Graph, id: number, count: number): void {
  const value = graph.value(id);
  value.shape = [...value.shape.slice(0, -1), count];
}

/** Inserts `op` after `node`: node now writes a fresh value, which `op` turns into node's old output. */
function follow(graph: Graph, node: GraphNode, op: string, outputFeatures?: number): GraphNode {
  const output = node.outputs[0];
  const partial = graph.addValue({ dtype: graph.value(output).dtype, shape: [...graph.value(output).shape], kind: 'value' });
  if (outputFeatures !== undefined) setFeatures(graph, partial.id, outputFeatures);
  node.outputs[0] = partial.id;
  const collective: GraphNode = { op, inputs: [partial.id], outputs: [output], attrs: {} };
  graph.nodes.splice(graph.nodes.indexOf(node) + 1, 0, collective);
  return collective;
}

function splitTensors(graph: Graph, facts: ParallelFacts, mapping: RankMapping): void {
  const { tpSize } = mapping;
  const tpRank = mapping.rank % tpSize;
  // Parameters take their shard's shape; a parameter this rank does not hold (a row-parallel bias on
  // tp ranks but 0) leaves the linear that read it.
  const dropped = new Set<number>();
  for (const value of graph.values.values()) {
    if (value.kind !== 'parameter' || !value.name) continue;
    const shard = tensorShard(value.name, value.shape as number[], facts, tpSize, tpRank);
    if (shard) value.shape = shard.shape;
    else dropped.add(value.id);
  }
  const head = logitsLinear(graph);
  for (const node of [...graph.nodes]) {
    node.inputs = node.inputs.filter((id) => !dropped.has(id));
    const [x] = node.inputs;
    switch (node.op) {
      case 'linear': {
        const weight = graph.value(node.inputs[1]);
        const [n, k] = weight.shape as number[];
        if (k !== features(graph, x)) {
          throw new MappingError(`tensor parallelism: ${weight.name} [${weight.shape}] reads ${features(graph, x)} features; no split rule makes them agree`);
        }
        const role = splitRole(weight.name ?? '');
        if (role === 'row') {
          setFeatures(graph, node.outputs[0], n);
          follow(graph, node, 'all_reduce');
        } else if (node === head && splitsVocabulary(facts, tpSize)) {
          follow(graph, node, 'all_gather', n);
        } else {
          setFeatures(graph, node.outputs[0], n);
        }
        break;
      }
      case 'moe':
        // Each rank holds a slice of every expert's width: its output is a partial sum.
        follow(graph, node, 'all_reduce');
        break;
      case 'attention': {
        const headDim = Number(node.attrs.headDim);
        const numHeads = features(graph, node.inputs[0]) / headDim;
        const numKvHeads = features(graph, node.inputs[1]) / headDim;
        const attrs: GraphNode['attrs'] = { ...node.attrs, numHeads, numKvHeads };
        if (Array.isArray(node.attrs.alibiSlopes)) attrs.alibiSlopes = node.attrs.alibiSlopes.slice(tpRank * numHeads, (tpRank + 1) * numHeads);
        node.attrs = attrs;
        setFeatures(graph, node.outputs[0], numHeads * headDim);
        break;
      }
      case 'rope':
        node.attrs = { ...node.attrs, numHeads: features(graph, x) / Number(node.attrs.headDim) };
        setFeatures(graph, node.outputs[0], features(graph, x));
        break;
      case 'embedding': {
        const table = graph.value(node.inputs[1]);
        setFeatures(graph, node.outputs[0], table.shape[1] as number);
        if (splitRole(table.name ?? '') === 'vocab' && splitsVocabulary(facts, tpSize)) {
          // This rank's rows of the table: ids outside them look up zeros, and the sum over the ranks
          // is the full lookup.
          const rows = table.shape[0] as number;
          node.op = 'vocab_parallel_embedding';
          node.attrs = { ...node.attrs, vocabStart: tpRank * rows };
          follow(graph, node, 'all_reduce');
        }
        break;
      }
      case 'position_embedding':
        setFeatures(graph, node.outputs[0], graph.value(node.inputs[1]).shape[1] as number);
        break;
      case 'send':
      case 'recv':
        break;
      default: {
        // Elementwise ops, norms, activations, gather_rows, softcap: their output is as wide as their
        // activation inputs, which must agree.
        const widths = node.inputs.filter((id) => graph.value(id).kind === 'value').map((id) => features(graph, id));
        if (widths.some((w) => w !== widths[0])) {
          throw new MappingError(`tensor parallelism: ${node.op} reads activations of ${widths.join(' and ')} features`);
        }
        if (widths.length > 0) for (const id of node.outputs) setFeatures(graph, id, widths[0]);
      }
    }
  }
}
