import { Network } from './network';
import { embedding, linear, rmsNorm } from './ops';
import { Tensor } from './tensor';

/**
 * A node of a model's tree. Its parameters are named by their path from the root, joined with dots
 * (`transformer.layers.0.attention.q.weight`), which is how checkpoints address them.
 */
export abstract class Module {
  constructor(
    readonly network: Network,
    readonly path: string,
  ) {}

  /** Declares (or, when tied, finds) the parameter `<path>.<name>`. */
  protected parameter(name: string, shape: number[]): Tensor {
    return this.network.parameter(joinPath(this.path, name), shape);
  }

  /** Path of a child module. */
  protected childPath(name: string): string {
    return joinPath(this.path, name);
  }

  /** This subtree's parameters, in declaration order. */
  namedParameters(): Array<[string, Tensor]> {
    const prefix = this.path === '' ? '' : `${this.path}.`;
    return [...this.network.parameters].filter(([name]) => name.startsWith(prefix));
  }
}

export function joinPath(path: string, name: string): string {
  return path === '' ? name : `${path}.${name}`;
}

export class Linear extends Module {
  readonly weight: Tensor;
  readonly bias?: Tensor;

  constructor(network: Network, path: string, inFeatures: number, outFeatures: number, options: { bias?: boolean } = {}) {
    super(network, path);
    this.weight = this.parameter('weight', [outFeatures, inFeatures]);
    if (options.bias) this.bias = this.parameter('bias', [outFeatures]);
  }

  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias);
  }
}

export class Embedding extends Module {
  readonly weight: Tensor;

  constructor(network: Network, path: string, vocabSize: number, hiddenSize: number) {
    super(network, path);
    this.weight = this.parameter('weight', [vocabSize, hiddenSize]);
  }

  forward(ids: Tensor, scale?: number): Tensor {
    return embedding(ids, this.weight, { scale });
  }
}

export class RmsNorm extends Module {
  readonly weight: Tensor;

  constructor(
    network: Network,
    path: string,
    hiddenSize: number,
    readonly eps: number,
    readonly weightOffset = 0,
  ) {
    super(network, path);
    this.weight = this.parameter('weight', [hiddenSize]);
  }

  forward(x: Tensor): Tensor {
    return rmsNorm(x, this.weight, { eps: this.eps, weightOffset: this.weightOffset });
  }
}
