import type { Lowering } from './types';

// Constant folding: the inverse frequencies (with their scaling variant already applied) become a
// float32 weight, shared by every layer that uses the same table.
export const lowerRope: Lowering = (node, context) => {
  const [x, positions] = node.inputs;
  context.expectGraphInput(positions, 'position_ids', 'rope');
  const inverseFrequencies = node.attrs.inverseFrequencies as number[];
  const attrs: Record<string, number | boolean> = {
    numHeads: Number(node.attrs.numHeads),
    headDim: Number(node.attrs.headDim),
    rotaryDim: Number(node.attrs.rotaryDim),
    interleaved: Boolean(node.attrs.interleaved),
    attentionScaling: Number(node.attrs.attentionScaling ?? 1),
  };
  if (context.llamaCppNumerics) {
    const base = llamaCppThetaBase(inverseFrequencies, attrs.rotaryDim as number);
    if (base !== undefined) attrs.llamaCppThetaBase = base;
  }
  return [
    {
      op: 'rope',
      inputs: [x],
      outputs: node.outputs,
      weights: { invFreq: context.constant('rope.inv_freq', inverseFrequencies) },
      attrs,
    },
  ];
};

/**
 * The rope base of an unscaled table (inverse frequency i = base^(-2i / rotaryDim)), as the float32 value
 * llama.cpp reads from `rope.freq_base`; undefined for a scaled table (llama.cpp scales angles otherwise,
 * and the engine then keeps transformers' angles).
 */
function llamaCppThetaBase(inverseFrequencies: number[], rotaryDim: number): number | undefined {
  if (inverseFrequencies.length < 2 || inverseFrequencies[0] !== 1) return undefined;
  const base = Math.fround(inverseFrequencies[1] ** (-rotaryDim / 2));
  const geometric = inverseFrequencies.every((f, i) => Math.abs(f - base ** ((-2 * i) / rotaryDim)) <= 1e-6 * f);
  return geometric && base > 1 ? base : undefined;
}
