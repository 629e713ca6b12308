import type { Lowering } from './types';

/** add, mul, silu and swiglu map one to one onto kernels of the same name. */
export const lowerElementwise: Lowering = (node) => [
  { op: node.op, inputs: node.inputs, outputs: node.outputs, weights: {}, attrs: {} },
];
