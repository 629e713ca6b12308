import type { Graph } from '../graph';

/**
 * mul(gelu(gate), up) -> geglu(gate, up) (Gemma's GeGLU MLP), keeping gelu's `approximate`: as
 * fuse-swiglu, one pass over memory and no buffer for gelu's output. Applies only when nothing else reads
 * the gelu output. Returns the count.
 */
export function fuseGeglu(graph: Graph): number {
  let fused = 0;
  for (const mul of [...graph.nodes]) {
    if (mul.op !== 'mul') continue;
    for (const side of [0, 1]) {
      const geluOut = mul.inputs[side];
      const gelu = graph.producer(geluOut);
      if (!gelu || gelu.op !== 'gelu' || graph.consumers(geluOut).length !== 1 || graph.isGraphOutput(geluOut)) continue;
      mul.op = 'geglu';
      mul.inputs = [gelu.inputs[0], mul.inputs[1 - side]];
      mul.attrs = { ...mul.attrs, approximate: gelu.attrs.approximate === 'tanh' ? 'tanh' : 'none' };
      graph.nodes = graph.nodes.filter((n) => n !== gelu);
      graph.values.delete(geluOut);
      fused++;
      break;
    }
  }
  return fused;
}
