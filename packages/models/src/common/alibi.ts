// ALiBi slopes exactly as transformers' build_alibi_tensor (modeling_bloom.py) computes them, in float32.

const f32 = Math.fround;

/**
 * Head h's slope. For a power-of-2 head count n: base^(h + 1) with base = 2^(-8 / n). Otherwise the
 * first `closest` heads (closest = the largest power of 2 <= n) take the slopes of `closest` heads, and
 * the remaining ones take every other slope of 2 * closest heads: extraBase^1, extraBase^3, ...
 */
export function alibiSlopes(numHeads: number): number[] {
  if (!Number.isSafeInteger(numHeads) || numHeads < 1) throw new Error(`alibiSlopes: invalid head count ${numHeads}`);
  const closest = 2 ** Math.floor(Math.log2(numHeads));
  // torch.tensor(2 ** (-(2 ** -(log2(closest) - 3)))) is a Python double rounded to float32.
  const base = f32(2 ** -(2 ** -(Math.log2(closest) - 3)));
  const slopes: number[] = [];
  for (let p = 1; p <= closest; p++) slopes.push(f32(Math.pow(base, p)));
  if (closest !== numHeads) {
    const extraBase = f32(2 ** -(2 ** -(Math.log2(2 * closest) - 3)));
    const remaining = Math.min(closest, numHeads - closest);
    for (let p = 1; p < 1 + 2 * remaining; p += 2) slopes.push(f32(Math.pow(extraBase, p)));
  }
  return slopes;
}
