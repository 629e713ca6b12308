// Which activations of a 16-bit CUDA engine are stored in 16 bits. Tensor cores want 16-bit GEMM
// operands, so every value a `linear` or `moe` reads is stored in the engine's dtype; everything else
// (GEMM outputs, the residual stream, attention's q/k/v, norms' statistics' inputs, the logits) stays
// float32, as in the CPU engines. Measured on the 20 hf-tiny fixtures: all-16-bit activations put two of
// them past the 3e-2 bar against the float32 references (3.1e-2, 3.7e-2); this split keeps every one
// under 2.7e-2 while decode still reads only 16-bit weights and a 16-bit KV cache. See
// docs/decisions/0007-sixteen-bit-gemm-operands.md. A linear with a norm prologue
// (lower/fuse-linear-neighbours.ts) reads the norm's float32 input: its GEMM operand is the normed copy,
// its last output.
import type { Graph } from './graph';
import type { LoweredProgram } from './lower';
import { gemmInputOf } from './lower/fuse-linear-neighbours';
import type { ActivationDType } from './memory-plan';

/** Root value id -> element type, for the values that are not float32. */
export function activationDTypes(graph: Graph, program: LoweredProgram, dtype: ActivationDType): Map<number, ActivationDType> {
  const dtypes = new Map<number, ActivationDType>();
  if (dtype === 'float32') return dtypes;
  const rootOf = (id: number) => program.views.get(id)?.of ?? id;
  const outputs = new Set(Object.values(graph.outputs).map(rootOf));
  for (const op of program.ops) {
    if (op.op !== 'linear' && op.op !== 'moe') continue;
    const root = rootOf(gemmInputOf(op));
    if (!outputs.has(root)) dtypes.set(root, dtype);
  }
  return dtypes;
}
