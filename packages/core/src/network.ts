import { DType, Shape, Tensor } from './tensor';

/** An op's attributes: plain JSON-compatible values (numbers, strings, booleans, number arrays). */
export type Attrs = Record<string, number | string | boolean | number[]>;

export interface Node {
  readonly op: string;
  readonly inputs: Tensor[];
  readonly outputs: Tensor[];
  readonly attrs: Attrs;
}

/** The JSON form of a network, as the builder consumes it. Values are referred to by id. */
export interface NetworkJson {
  values: Array<{ id: number; dtype: DType; shape: Shape; name?: string; kind: Tensor['kind'] }>;
  inputs: Record<string, number>;
  parameters: Record<string, number>;
  outputs: Record<string, number>;
  nodes: Array<{ op: string; inputs: number[]; outputs: number[]; attrs: Attrs }>;
}

/**
 * A computation graph: named inputs, named parameters (weights addressed by their checkpoint name),
 * ops in the order they were called, and named outputs. Build one with the functional ops of
 * `./ops` or the modules of `./module`.
 */
export class Network {
  private readonly values: Tensor[] = [];
  readonly nodes: Node[] = [];
  readonly inputs = new Map<string, Tensor>();
  readonly parameters = new Map<string, Tensor>();
  readonly outputs = new Map<string, Tensor>();

  constructor(readonly name = 'network') {}

  input(name: string, dtype: DType, shape: Shape): Tensor {
    if (this.inputs.has(name)) throw new Error(`${this.name}: input "${name}" is declared twice`);
    const tensor = this.newValue(dtype, shape, name, 'input');
    this.inputs.set(name, tensor);
    return tensor;
  }

  /** Declares a weight; asking again for the same name returns the same tensor (tied weights). */
  parameter(name: string, shape: readonly number[], dtype: DType = 'float32'): Tensor {
    const existing = this.parameters.get(name);
    if (existing) {
      if (existing.shape.join() !== shape.join()) {
        throw new Error(`${this.name}: parameter "${name}" redeclared with shape [${shape}] (was [${existing.shape}])`);
      }
      return existing;
    }
    const tensor = this.newValue(dtype, shape, name, 'parameter');
    this.parameters.set(name, tensor);
    return tensor;
  }

  output(name: string, tensor: Tensor): void {
    this.check(tensor);
    this.outputs.set(name, tensor);
  }

  /** Appends an op; used by the functional ops, which check shapes first. */
  addNode(op: string, inputs: Tensor[], outputSpecs: Array<{ dtype: DType; shape: Shape }>, attrs: Attrs = {}): Tensor[] {
    for (const input of inputs) this.check(input);
    const outputs = outputSpecs.map((spec) => this.newValue(spec.dtype, spec.shape));
    this.nodes.push({ op, inputs, outputs, attrs });
    return outputs;
  }

  toJSON(): NetworkJson {
    const ids = (map: Map<string, Tensor>) => Object.fromEntries([...map].map(([name, t]) => [name, t.id]));
    return {
      values: this.values.map((t) => ({ id: t.id, dtype: t.dtype, shape: [...t.shape], name: t.name, kind: t.kind })),
      inputs: ids(this.inputs),
      parameters: ids(this.parameters),
      outputs: ids(this.outputs),
      nodes: this.nodes.map((n) => ({
        op: n.op,
        inputs: n.inputs.map((t) => t.id),
        outputs: n.outputs.map((t) => t.id),
        attrs: n.attrs,
      })),
    };
  }

  private newValue(dtype: DType, shape: Shape, name?: string, kind: Tensor['kind'] = 'value'): Tensor {
    const tensor = new Tensor(this, this.values.length, dtype, [...shape], name, kind);
    this.values.push(tensor);
    return tensor;
  }

  private check(tensor: Tensor): void {
    if (tensor.network !== this || this.values[tensor.id] !== tensor) {
      throw new Error(`${this.name}: tensor ${tensor.describe()} belongs to another network`);
    }
  }
}
