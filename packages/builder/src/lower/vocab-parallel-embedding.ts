import type { Lowering } from './types';

// The token embedding split by vocabulary across tensor-parallel ranks (parallel.ts): this rank's rows
// start at id `vocabStart`; other ids give zero rows, and the all_reduce after it sums the ranks' rows.
export const lowerVocabParallelEmbedding: Lowering = (node, context) => {
  const [ids, table] = node.inputs;
  context.expectGraphInput(ids, 'input_ids', 'vocab_parallel_embedding');
  return [
    {
      op: 'vocab_parallel_embedding',
      inputs: [],
      outputs: node.outputs,
      weights: { table: context.parameter(table) },
      attrs: { scale: Number(node.attrs.scale ?? 1), vocabStart: Number(node.attrs.vocabStart) },
    },
  ];
};
