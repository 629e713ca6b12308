import type { Graph, GraphNode } from '../graph';

/**
 * Horizontal GEMM fusion: linears that read the same input (attention's q, k and v; the MLP's gate and
 * up) become one linear over their weights concatenated along the output dimension, followed by
 * zero-copy column slices. One pass over a wider weight reads the input once and gives the kernel more
 * rows per call. Returns the number of fused groups.
 */
export function fuseSiblingLinears(graph: Graph): number {
  const groups = new Map<number, GraphNode[]>();
  for (const node of graph.nodes) {
    if (node.op !== 'linear') continue;
    const [input, weight] = node.inputs;
    if (graph.value(weight).kind !== 'parameter') continue;
    const group = groups.get(input) ?? [];
    group.push(node);
    groups.set(input, group);
  }

  let fused = 0;
  for (const [input, siblings] of groups) {
    // Biases must be all present or all absent, and parameters (not computed values).
    const withBias = siblings.filter((n) => n.inputs.length === 3);
    const group = withBias.length === siblings.length || withBias.length === 0 ? siblings : [];
    if (group.length < 2) continue;
    if (group.some((n) => n.inputs.length === 3 && graph.value(n.inputs[2]).kind !== 'parameter')) continue;

    const weights = group.map((n) => graph.value(n.inputs[1]));
    const widths = weights.map((w) => w.shape[0] as number);
    const totalWidth = widths.reduce((a, b) => a + b, 0);
    const inFeatures = weights[0].shape[1];
    const fusedWeight = graph.addValue({
      dtype: weights[0].dtype,
      shape: [totalWidth, inFeatures],
      kind: 'parameter',
      name: fusedName(weights.map((w) => w.name ?? `%${w.id}`)),
      sources: weights.flatMap((w) => w.sources ?? []),
    });
    const fusedInputs = [input, fusedWeight.id];
    if (withBias.length > 0) {
      const biases = group.map((n) => graph.value(n.inputs[2]));
      fusedInputs.push(
        graph.addValue({
          dtype: biases[0].dtype,
          shape: [totalWidth],
          kind: 'parameter',
          name: fusedName(biases.map((b) => b.name ?? `%${b.id}`)),
          sources: biases.flatMap((b) => b.sources ?? []),
        }).id,
      );
    }
    const rows = graph.value(group[0].outputs[0]).shape[0];
    const fusedOutput = graph.addValue({ dtype: 'float32', shape: [rows, totalWidth], kind: 'value' });

    const replacement: GraphNode[] = [{ op: 'linear', inputs: fusedInputs, outputs: [fusedOutput.id], attrs: {} }];
    let colOffset = 0;
    group.forEach((node, i) => {
      replacement.push({ op: 'slice', inputs: [fusedOutput.id], outputs: node.outputs, attrs: { colOffset, cols: widths[i] } });
      colOffset += widths[i];
    });
    const first = graph.nodes.indexOf(group[0]);
    const removed = new Set(group);
    graph.nodes = [
      ...graph.nodes.slice(0, first).filter((n) => !removed.has(n)),
      ...replacement,
      ...graph.nodes.slice(first).filter((n) => !removed.has(n)),
    ];
    for (const node of group) {
      for (const id of node.inputs.slice(1)) {
        if (graph.consumers(id).length === 0) graph.values.delete(id);
      }
    }
    fused++;
  }
  return fused;
}

/** "a.q.weight", "a.k.weight", "a.v.weight" -> "a.q+k+v.weight". */
export function fusedName(names: string[]): string {
  const split = names.map((n) => n.split('.'));
  const first = split[0];
  let prefix = 0;
  while (prefix < first.length && split.every((s) => s[prefix] === first[prefix])) prefix++;
  let suffix = 0;
  while (
    suffix < first.length - prefix &&
    split.every((s) => s.length - suffix - 1 >= prefix && s[s.length - suffix - 1] === first[first.length - suffix - 1])
  ) {
    suffix++;
  }
  const middles = split.map((s) => s.slice(prefix, s.length - suffix).join('.'));
  return [...first.slice(0, prefix), middles.join('+'), ...first.slice(first.length - suffix)].join('.');
}
