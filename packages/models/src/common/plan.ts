// Helpers for writing checkpoint plans: canonical Kiln tensors and the HF tensors (or row slices of
// fused HF tensors) they are gathered from. Shapes are what the config implies; conversion checks them.
import type { CheckpointTensorPlan, HfTensorSource } from '../types';
import type { NormConfig } from './norm';

export class PlanBuilder {
  readonly tensors: CheckpointTensorPlan[] = [];

  /** One Kiln tensor from one whole HF tensor of the same shape. */
  copy(name: string, hfName: string, shape: number[]): this {
    this.tensors.push({ name, shape, sources: [{ tensor: hfName, shape }] });
    return this;
  }

  /** A Kiln tensor gathered from several sources concatenated along dim 0. */
  gather(name: string, shape: number[], sources: HfTensorSource[]): this {
    this.tensors.push({ name, shape, sources });
    return this;
  }

  /**
   * `<name>.weight` [out, in] (+ `<name>.bias` [out]) from `<hfName>.weight`/`.bias`. `conv1d`: GPT-2's
   * Conv1D stores the weight as [in, out], so it is transposed.
   */
  linear(name: string, hfName: string, outFeatures: number, inFeatures: number, bias: boolean, conv1d = false): this {
    if (conv1d) {
      this.gather(`${name}.weight`, [outFeatures, inFeatures], [
        { tensor: `${hfName}.weight`, shape: [inFeatures, outFeatures], transpose: true },
      ]);
    } else {
      this.copy(`${name}.weight`, `${hfName}.weight`, [outFeatures, inFeatures]);
    }
    if (bias) this.copy(`${name}.bias`, `${hfName}.bias`, [outFeatures]);
    return this;
  }

  /** A norm's weight (and bias, for LayerNorm). */
  norm(name: string, hfName: string, size: number, norm: NormConfig): this {
    this.copy(`${name}.weight`, `${hfName}.weight`, [size]);
    if (norm.kind === 'layer') this.copy(`${name}.bias`, `${hfName}.bias`, [size]);
    return this;
  }

  /**
   * Linears cut out of one fused HF linear (`<hfName>.weight` [fusedOut, in], or [in, fusedOut] when
   * `conv1d`). `parts[i]` lists the row ranges (in the fused output dimension) of Kiln linear `names[i]`,
   * concatenated in order; the bias, when present, is cut the same way.
   */
  fusedLinear(
    hfName: string,
    inFeatures: number,
    fusedOut: number,
    bias: boolean,
    parts: Array<{ name: string; rows: RowRange[] }>,
    conv1d = false,
  ): this {
    const weightShape = conv1d ? [inFeatures, fusedOut] : [fusedOut, inFeatures];
    for (const part of parts) {
      const out = part.rows.reduce((sum, r) => sum + r.count, 0);
      this.gather(
        `${part.name}.weight`,
        [out, inFeatures],
        part.rows.map((r) => ({
          tensor: `${hfName}.weight`,
          shape: weightShape,
          ...(conv1d ? { transpose: true } : {}),
          rowStart: r.start,
          rowCount: r.count,
        })),
      );
      if (bias) {
        this.gather(
          `${part.name}.bias`,
          [out],
          part.rows.map((r) => ({ tensor: `${hfName}.bias`, shape: [fusedOut], rowStart: r.start, rowCount: r.count })),
        );
      }
    }
    return this;
  }
}

export interface RowRange {
  start: number;
  count: number;
}

/** Consecutive blocks: [a rows][b rows][c rows]... (Phi-3's qkv_proj, GPT-2's c_attn, MQA layouts). */
export function contiguousRows(sizes: number[]): RowRange[][] {
  let start = 0;
  return sizes.map((count) => {
    const range = [{ start, count }];
    start += count;
    return range;
  });
}

/**
 * Per-group interleaving: the fused output is `groups` repetitions of [sizes[0] rows][sizes[1] rows]...
 * (GPT-NeoX and BLOOM: per head [q, k, v]; Falcon's new architecture: per kv group [q heads, k, v]).
 * Part p gathers its block from every group, in group order.
 */
export function interleavedRows(groups: number, sizes: number[]): RowRange[][] {
  const stride = sizes.reduce((a, b) => a + b, 0);
  return sizes.map((count, p) => {
    const offset = sizes.slice(0, p).reduce((a, b) => a + b, 0);
    return Array.from({ length: groups }, (_, g) => ({ start: g * stride + offset, count }));
  });
}
