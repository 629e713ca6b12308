import type { Lowering } from './types';

export const lowerRmsNorm: Lowering = (node, context) => {
  const [x, weight] = node.inputs;
  return [
    {
      op: 'rms_norm',
      inputs: [x],
      outputs: node.outputs,
      weights: { weight: context.parameter(weight) },
      attrs: {
        eps: Number(node.attrs.eps),
        weightOffset: Number(node.attrs.weightOffset ?? 0),
        // Per-group norm (Qwen3's q/k norm); absent means the whole row, as before.
        ...(node.attrs.groupSize !== undefined ? { groupSize: Number(node.attrs.groupSize) } : {}),
      },
    },
  ];
};

/** add_rms_norm(a, b, weight) -> (a + b, rms_norm(a + b)): the fused residual add and norm (fuse-add-norm.ts). */
export const lowerAddRmsNorm: Lowering = (node, context) => {
  const [a, b, weight] = node.inputs;
  return [
    {
      op: 'add_rms_norm',
      inputs: [a, b],
      outputs: node.outputs,
      weights: { weight: context.parameter(weight) },
      attrs: { eps: Number(node.attrs.eps), weightOffset: Number(node.attrs.weightOffset ?? 0) },
    },
  ];
};
