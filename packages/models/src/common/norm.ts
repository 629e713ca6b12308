// The two norms of the zoo behind one module, so a family's config picks one with a switch.
import { Module, Network, Tensor, layerNorm, rmsNorm } from '@kiln/core';

export type NormConfig =
  /** RMSNorm; `weightOffset` 1 is Gemma's (1 + w). */
  | { kind: 'rms'; eps: number; weightOffset?: number }
  /** LayerNorm with weight and bias (GPT-2, NeoX, OPT, Falcon, BLOOM, Phi, Starcoder2). */
  | { kind: 'layer'; eps: number };

/** A norm over the hidden features: parameters `<path>.weight` (and `<path>.bias` for LayerNorm). */
export class Norm extends Module {
  readonly weight: Tensor;
  readonly bias?: Tensor;

  private constructor(network: Network, path: string, size: number, private readonly config: NormConfig) {
    super(network, path);
    this.weight = this.parameter('weight', [size]);
    if (config.kind === 'layer') this.bias = this.parameter('bias', [size]);
  }

  static create(network: Network, path: string, size: number, config: NormConfig): Norm {
    return new Norm(network, path, size, config);
  }

  forward(x: Tensor): Tensor {
    const c = this.config;
    return c.kind === 'layer'
      ? layerNorm(x, this.weight, this.bias, { eps: c.eps })
      : rmsNorm(x, this.weight, { eps: c.eps, weightOffset: c.weightOffset ?? 0 });
  }
}
