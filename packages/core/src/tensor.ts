import type { Network } from './network';

/** Element types of graph values. Weights may be stored narrower; activations are float32. */
export type DType = 'float32' | 'float16' | 'bfloat16' | 'int32';

/**
 * A dimension: a fixed size, or a symbol the runtime binds each step. `tokens` is the number of packed
 * tokens of the step (all sequences, no padding); `logitRows` is the number of rows the LM head
 * computes (one per sequence, or every prompt token when context logits are gathered).
 */
export type Dim = number | 'tokens' | 'logitRows';
export type Shape = readonly Dim[];

/** A value of a network: a graph input, a parameter (a named weight) or the output of an op. */
export class Tensor {
  constructor(
    readonly network: Network,
    readonly id: number,
    readonly dtype: DType,
    readonly shape: Shape,
    /** Graph inputs and parameters have a name; op outputs have none. */
    readonly name?: string,
    readonly kind: 'input' | 'parameter' | 'value' = 'value',
  ) {}

  get rank(): number {
    return this.shape.length;
  }

  /** The size of the last dimension, which is always fixed for Kiln's ops. */
  get features(): number {
    const last = this.shape[this.shape.length - 1];
    if (typeof last !== 'number') throw new Error(`tensor ${this.describe()} has a symbolic last dimension`);
    return last;
  }

  describe(): string {
    return `${this.name ?? `%${this.id}`}[${this.shape.join(', ')}]`;
  }
}

export function shapeToString(shape: Shape): string {
  return `[${shape.join(', ')}]`;
}
