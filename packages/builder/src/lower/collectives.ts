import type { Lowering } from './types';

// The collectives of tensor parallelism and the transfers between pipeline stages (parallel.ts inserts
// them): no weights; send and recv name their peer's global rank.
export const lowerCollective: Lowering = (node) => {
  const attrs: Record<string, number> = node.op === 'send' || node.op === 'recv' ? { peer: Number(node.attrs.peer) } : {};
  return [{ op: node.op, inputs: node.inputs, outputs: node.outputs, weights: {}, attrs }];
};
