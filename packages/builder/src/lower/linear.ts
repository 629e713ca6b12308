import type { Lowering } from './types';

// Biases are stored in float32: they are tiny and added after float32 accumulation. The matrix is what
// quantization (build config `quantization`) turns into int8, int4 or float8_e4m3fn.
export const lowerLinear: Lowering = (node, context) => {
  const [x, weight, bias] = node.inputs;
  // The linear that writes the logits is the LM head, which FP8 builds leave unquantized (decision 0015).
  const lmHead = context.graph.outputs.logits === node.outputs[0];
  const weights: Record<string, number> = { weight: context.parameter(weight, { quantizable: true, lmHead }) };
  if (bias !== undefined) weights.bias = context.parameter(bias, { float32: true });
  // bf16LinearInputs (cpu, bfloat16 weights): the kernel reads x rounded to bfloat16 (decision 0012).
  const attrs: Record<string, boolean> = context.bf16LinearInputs ? { bf16Inputs: true } : {};
  return [{ op: 'linear', inputs: [x], outputs: node.outputs, weights, attrs }];
};
