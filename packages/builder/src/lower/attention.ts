import type { Lowering } from './types';

export const lowerAttention: Lowering = (node) => [
  {
    op: 'attention',
    inputs: node.inputs,
    outputs: node.outputs,
    weights: {},
    attrs: {
      layer: Number(node.attrs.layer),
      numHeads: Number(node.attrs.numHeads),
      numKvHeads: Number(node.attrs.numKvHeads),
      headDim: Number(node.attrs.headDim),
      scale: Number(node.attrs.scale),
      slidingWindow: Number(node.attrs.slidingWindow ?? 0),
    },
  },
];
