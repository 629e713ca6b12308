import type { Lowering } from './types';

/** gelu and geglu carry their approximation ('none' or 'tanh') to the engine op. */
export const lowerGelu: Lowering = (node) => [
  {
    op: node.op,
    inputs: node.inputs,
    outputs: node.outputs,
    weights: {},
    attrs: { approximate: node.attrs.approximate === 'tanh' ? 'tanh' : 'none' },
  },
];

export const lowerSoftcap: Lowering = (node) => [
  { op: 'softcap', inputs: node.inputs, outputs: node.outputs, weights: {}, attrs: { cap: Number(node.attrs.cap) } },
];
