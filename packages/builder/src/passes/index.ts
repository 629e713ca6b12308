import type { Graph } from '../graph';
import { removeDeadNodes } from './dead-nodes';
import { fuseAddNorm } from './fuse-add-norm';
import { fuseGeglu } from './fuse-geglu';
import { fuseSiblingLinears } from './fuse-sibling-linears';
import { fuseSwiglu } from './fuse-swiglu';

export { removeDeadNodes, fuseSiblingLinears, fuseSwiglu, fuseGeglu, fuseAddNorm };

export interface PassReport {
  pass: string;
  changes: number;
}

/** The graph passes, in the order the builder runs them. */
export const passes: Array<{ name: string; run: (graph: Graph) => number }> = [
  { name: 'remove-dead-nodes', run: removeDeadNodes },
  { name: 'fuse-sibling-linears', run: fuseSiblingLinears },
  { name: 'fuse-swiglu', run: fuseSwiglu },
  { name: 'fuse-geglu', run: fuseGeglu },
  { name: 'fuse-add-norm', run: fuseAddNorm },
];

export function runPasses(graph: Graph): PassReport[] {
  return passes.map((pass) => ({ pass: pass.name, changes: pass.run(graph) }));
}
