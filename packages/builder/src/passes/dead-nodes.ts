import type { Graph } from '../graph';

/**
 * Removes nodes whose outputs never reach a graph output, and parameters nothing reads, so that unused
 * weights are not packed. `send` (a pipeline stage's activations to the next rank) has no output but
 * is always kept. Returns the number of nodes removed.
 */
export function removeDeadNodes(graph: Graph): number {
  const needed = new Set<number>(Object.values(graph.outputs));
  const kept: typeof graph.nodes = [];
  for (let i = graph.nodes.length - 1; i >= 0; i--) {
    const node = graph.nodes[i];
    if (node.op !== 'send' && !node.outputs.some((id) => needed.has(id))) continue;
    kept.push(node);
    for (const id of node.inputs) needed.add(id);
  }
  const removed = graph.nodes.length - kept.length;
  graph.nodes = kept.reverse();
  for (const [id, value] of graph.values) {
    if (value.kind === 'parameter' && !needed.has(id)) graph.values.delete(id);
  }
  return removed;
}
