// The builder's working form of a network: the JSON graph of @kiln/core made mutable, so that passes can
// fuse, slice and drop nodes. Parameters remember which checkpoint tensors they are made of.
import type { Attrs, DType, Dim, NetworkJson } from '@kiln/core';

export interface GraphValue {
  id: number;
  dtype: DType;
  shape: Dim[];
  kind: 'input' | 'parameter' | 'value';
  name?: string;
  /** Parameters: checkpoint tensors concatenated along dimension 0 (one, unless fused). */
  sources?: string[];
}

export interface GraphNode {
  op: string;
  inputs: number[];
  outputs: number[];
  attrs: Attrs;
}

export class Graph {
  readonly values = new Map<number, GraphValue>();
  nodes: GraphNode[];
  readonly inputs: Record<string, number>;
  readonly outputs: Record<string, number>;
  private nextId: number;

  constructor(json: NetworkJson) {
    for (const value of json.values) {
      this.values.set(value.id, {
        ...value,
        shape: [...value.shape],
        sources: value.kind === 'parameter' ? [value.name as string] : undefined,
      });
    }
    this.nodes = json.nodes.map((node) => ({ ...node, inputs: [...node.inputs], outputs: [...node.outputs] }));
    this.inputs = { ...json.inputs };
    this.outputs = { ...json.outputs };
    this.nextId = Math.max(-1, ...this.values.keys()) + 1;
  }

  value(id: number): GraphValue {
    const value = this.values.get(id);
    if (!value) throw new Error(`graph: no value %${id}`);
    return value;
  }

  addValue(spec: Omit<GraphValue, 'id'>): GraphValue {
    const value = { ...spec, id: this.nextId++ };
    this.values.set(value.id, value);
    return value;
  }

  /** The node that computes a value, or undefined for inputs and parameters. */
  producer(id: number): GraphNode | undefined {
    return this.nodes.find((node) => node.outputs.includes(id));
  }

  /** Nodes that read a value. */
  consumers(id: number): GraphNode[] {
    return this.nodes.filter((node) => node.inputs.includes(id));
  }

  isGraphOutput(id: number): boolean {
    return Object.values(this.outputs).includes(id);
  }

  /** Number of fixed features (last dimension) of a value. */
  features(id: number): number {
    const shape = this.value(id).shape;
    const last = shape[shape.length - 1];
    if (typeof last !== 'number') throw new Error(`graph: value %${id} has a symbolic last dimension`);
    return last;
  }

  countOps(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const node of this.nodes) counts[node.op] = (counts[node.op] ?? 0) + 1;
    return counts;
  }
}
