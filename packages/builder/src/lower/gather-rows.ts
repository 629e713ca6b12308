import type { Lowering } from './types';

// The rows are chosen by the runtime each step (last token per sequence, or all prompt tokens).
export const lowerGatherRows: Lowering = (node) => [
  { op: 'gather_rows', inputs: node.inputs, outputs: node.outputs, weights: {}, attrs: {} },
];
