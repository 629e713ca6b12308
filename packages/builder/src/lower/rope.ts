import type { Lowering } from './types';

// Constant folding: the inverse frequencies (with their scaling variant already applied) become a
// float32 weight, shared by every layer that uses the same table.
export const lowerRope: Lowering = (node, context) => {
  const [x, positions] = node.inputs;
  context.expectGraphInput(positions, 'position_ids', 'rope');
  const inverseFrequencies = node.attrs.inverseFrequencies as number[];
  return [
    {
      op: 'rope',
      inputs: [x],
      outputs: node.outputs,
      weights: { invFreq: context.constant('rope.inv_freq', inverseFrequencies) },
      attrs: {
        numHeads: Number(node.attrs.numHeads),
        headDim: Number(node.attrs.headDim),
        rotaryDim: Number(node.attrs.rotaryDim),
        interleaved: Boolean(node.attrs.interleaved),
        attentionScaling: Number(node.attrs.attentionScaling ?? 1),
      },
    },
  ];
};
