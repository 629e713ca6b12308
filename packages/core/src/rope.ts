// Inverse frequencies of rotary position embeddings and their scaling variants, computed in float32
// exactly as transformers' ROPE_INIT_FUNCTIONS do (modeling_rope_utils.py), so engines match it.

export type RopeScaling =
  | { type: 'default' }
  | { type: 'linear'; factor: number }
  | {
      type: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    };

const f32 = Math.fround;

/** inv_freq[i] = 1 / base^(2i / dim), i < dim / 2, in float32. */
export function defaultInverseFrequencies(base: number, dim: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < dim; i += 2) out.push(f32(1 / f32(Math.pow(base, f32(i / dim)))));
  return out;
}

export function ropeInverseFrequencies(base: number, dim: number, scaling: RopeScaling = { type: 'default' }): number[] {
  const invFreq = defaultInverseFrequencies(base, dim);
  switch (scaling.type) {
    case 'default':
      return invFreq;
    case 'linear':
      // transformers' _compute_linear_scaling_rope_parameters: inv_freq / factor
      return invFreq.map((f) => f32(f / scaling.factor));
    case 'llama3': {
      // transformers' _compute_llama3_parameters: keep high frequencies, divide low ones by `factor`,
      // interpolate smoothly in between.
      const { factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings: oldContext } = scaling;
      const lowFreqWavelen = oldContext / lowFreqFactor;
      const highFreqWavelen = oldContext / highFreqFactor;
      return invFreq.map((f) => {
        const wavelen = f32((2 * Math.PI) / f);
        if (wavelen < highFreqWavelen) return f;
        if (wavelen > lowFreqWavelen) return f32(f / factor);
        const smooth = f32((f32(oldContext / wavelen) - lowFreqFactor) / (highFreqFactor - lowFreqFactor));
        return f32(f32(f32(1 - smooth) * f32(f / factor)) + f32(smooth * f));
      });
    }
  }
}
