import type { Lowering } from './types';

// Biases are stored in float32: they are tiny and added after float32 accumulation. The matrix is what
// weight-only quantization (build config `quantization`) turns into int8.
export const lowerLinear: Lowering = (node, context) => {
  const [x, weight, bias] = node.inputs;
  const weights: Record<string, number> = { weight: context.parameter(weight, { quantizable: true }) };
  if (bias !== undefined) weights.bias = context.parameter(bias, { float32: true });
  // bf16LinearInputs (cpu, bfloat16 weights): the kernel reads x rounded to bfloat16 (decision 0012).
  const attrs: Record<string, boolean> = context.bf16LinearInputs ? { bf16Inputs: true } : {};
  return [{ op: 'linear', inputs: [x], outputs: node.outputs, weights, attrs }];
};
