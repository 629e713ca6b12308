import type { LoweredOp, Lowering } from './types';

// softcap and the ALiBi slopes appear in the engine op only when the model uses them. The slopes become
// a float32 constant weight (as rope's inverse frequencies), shared by every layer with the same ones.
export const lowerAttention: Lowering = (node, context) => {
  const op: LoweredOp = {
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
  };
  if (context.llamaCppNumerics) op.attrs.llamaCppF16 = true;
  const softcap = Number(node.attrs.softcap ?? 0);
  if (softcap !== 0) op.attrs.softcap = softcap;
  const slopes = node.attrs.alibiSlopes;
  if (slopes !== undefined) {
    if (!Array.isArray(slopes)) throw new Error('lowering: attention attribute alibiSlopes must be an array of numbers');
    op.weights.alibiSlopes = context.constant('attention.alibi_slopes', slopes);
  }
  return [op];
};
