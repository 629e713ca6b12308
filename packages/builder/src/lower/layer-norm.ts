import type { Lowering } from './types';

// The bias is stored in float32, like linear's: tiny, and added to a float32 result.
export const lowerLayerNorm: Lowering = (node, context) => {
  const [x, weight, bias] = node.inputs;
  const weights: Record<string, number> = { weight: context.parameter(weight) };
  if (bias !== undefined) weights.bias = context.parameter(bias, { float32: true });
  return [{ op: 'layer_norm', inputs: [x], outputs: node.outputs, weights, attrs: { eps: Number(node.attrs.eps) } }];
};

/** add_layer_norm(a, b, weight[, bias]) -> (a + b, layer_norm(a + b)) (fuse-add-norm.ts). */
export const lowerAddLayerNorm: Lowering = (node, context) => {
  const [a, b, weight, bias] = node.inputs;
  const weights: Record<string, number> = { weight: context.parameter(weight) };
  if (bias !== undefined) weights.bias = context.parameter(bias, { float32: true });
  return [{ op: 'add_layer_norm', inputs: [a, b], outputs: node.outputs, weights, attrs: { eps: Number(node.attrs.eps) } }];
};
