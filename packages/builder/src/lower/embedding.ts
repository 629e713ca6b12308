import type { Lowering } from './types';

// The token ids are not a buffer: the kernel reads the step's ids directly.
export const lowerEmbedding: Lowering = (node, context) => {
  const [ids, table] = node.inputs;
  context.expectGraphInput(ids, 'input_ids', 'embedding');
  return [
    { op: 'embedding', inputs: [], outputs: node.outputs, weights: { table: context.parameter(table) }, attrs: { scale: Number(node.attrs.scale ?? 1) } },
  ];
};
