import type { Lowering } from './types';

// Like rope, the positions are not a buffer: the kernel reads the step's positions directly.
export const lowerPositionEmbedding: Lowering = (node, context) => {
  const [positions, table] = node.inputs;
  context.expectGraphInput(positions, 'position_ids', 'position_embedding');
  return [
    {
      op: 'position_embedding',
      inputs: [],
      outputs: node.outputs,
      weights: { table: context.parameter(table) },
      attrs: { offset: Number(node.attrs.offset ?? 0) },
    },
  ];
};
