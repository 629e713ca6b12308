import type { Graph } from '../graph';

/**
 * add(a, b) -> s, then rms_norm(s) or layer_norm(s) -> add_rms_norm / add_layer_norm(a, b) -> (s, n):
 * the residual add and the norm that reads it in one op, so a backend reads the two inputs once and
 * writes both results in one pass (TensorRT-LLM's and vLLM's fused residual + norm). `s` stays a value
 * for its other readers (the next residual add). The fused node takes the add's place: the norm only
 * reads `s` and parameters, so it can run that early. A norm over groups of a row (Qwen3's q/k norm) is
 * left alone, and so is an add whose sum more than one norm reads. Returns the count.
 */
export function fuseAddNorm(graph: Graph): number {
  let fused = 0;
  for (const add of [...graph.nodes]) {
    if (add.op !== 'add' || add.outputs.length !== 1) continue;
    const sum = add.outputs[0];
    const norms = graph.consumers(sum).filter((n) => n.op === 'rms_norm' || n.op === 'layer_norm');
    if (norms.length !== 1) continue;
    const norm = norms[0];
    if (norm.inputs[0] !== sum || norm.attrs.groupSize !== undefined) continue;
    add.op = norm.op === 'rms_norm' ? 'add_rms_norm' : 'add_layer_norm';
    add.inputs = [...add.inputs, ...norm.inputs.slice(1)];
    add.outputs = [sum, ...norm.outputs];
    add.attrs = { ...norm.attrs };
    graph.nodes = graph.nodes.filter((n) => n !== norm);
    fused++;
  }
  return fused;
}
