import type { Lowering } from './types';

export const lowerMoe: Lowering = (node, context) => {
  const [x, router, gate, up, down] = node.inputs;
  return [
    {
      op: 'moe',
      inputs: [x],
      outputs: node.outputs,
      weights: {
        router: context.parameter(router),
        gate: context.parameter(gate),
        up: context.parameter(up),
        down: context.parameter(down),
      },
      attrs: {
        numExperts: Number(node.attrs.numExperts),
        topK: Number(node.attrs.topK),
        normalizeTopK: Boolean(node.attrs.normalizeTopK),
      },
    },
  ];
};
