import type { Graph } from '../graph';

/**
 * mul(silu(gate), up) -> swiglu(gate, up): one pass over memory instead of two, and no intermediate
 * buffer for silu's output. Applies only when nothing else reads the silu output. Returns the count.
 */
export function fuseSwiglu(graph: Graph): number {
  let fused = 0;
  for (const mul of [...graph.nodes]) {
    if (mul.op !== 'mul') continue;
    for (const side of [0, 1]) {
      const silu = graph.producer(mul.inputs[side]);
      const siluOut = mul.inputs[side];
      if (!silu || silu.op !== 'silu' || graph.consumers(siluOut).length !== 1 || graph.isGraphOutput(siluOut)) continue;
      mul.op = 'swiglu';
      mul.inputs = [silu.inputs[0], mul.inputs[1 - side]];
      graph.nodes = graph.nodes.filter((n) => n !== silu);
      graph.values.delete(siluOut);
      fused++;
      break;
    }
  }
  return fused;
}
