// Q4_K and Q6_K encoders written from the GGML format description (ggml-common.h block_q4_K /
// block_q6_K and the decoding in ggml-quants.c): llama.cpp's quantizer is not available here, so the
// Q4_K_M-style test file is made with these. They pick scales by the plain range rule (no error search
// as llama.cpp's make_qkx2_quants does): a little less accurate than llama.cpp's, never more.

/** float32 -> IEEE half bits, round to nearest even. */
export function floatToHalf(value: number): number {
  const x = new Uint32Array(new Float32Array([value]).buffer)[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    return sign | (half + (rem > mid || (rem === mid && half & 1) ? 1 : 0));
  }
  const half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  return sign | (half + (rem > 0x1000 || (rem === 0x1000 && half & 1) ? 1 : 0));
}

export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

function putHalf(out: Uint8Array, at: number, value: number): number {
  const h = floatToHalf(value);
  out[at] = h & 0xff;
  out[at + 1] = h >> 8;
  return halfToFloat(h);
}

const clamp = (v: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, v));

/** One block_q4_K (144 bytes) of 256 values: 8 sub-blocks of 32 with 6-bit scales and mins. */
export function encodeQ4_KBlock(x: Float32Array): Uint8Array {
  const out = new Uint8Array(144);
  const scales: number[] = [];
  const mins: number[] = [];
  for (let j = 0; j < 8; j++) {
    const sub = x.subarray(32 * j, 32 * j + 32);
    const lo = Math.min(0, ...sub);
    const hi = Math.max(...sub);
    scales.push((hi - lo) / 15);
    mins.push(-lo); // value = d * sc * q - dmin * m, so m stores -min (min <= 0)
  }
  const d = putHalf(out, 0, Math.max(...scales) / 63);
  const dmin = putHalf(out, 2, Math.max(...mins) / 63);
  const sc = scales.map((s) => (d > 0 ? clamp(Math.round(s / d), 0, 63) : 0));
  const m = mins.map((v) => (dmin > 0 ? clamp(Math.round(v / dmin), 0, 63) : 0));
  // The 12 scale bytes, the inverse of get_scale_min_k4: sub-blocks 0-3 in the low 6 bits of bytes 0-7,
  // sub-blocks 4-7 as nibbles of bytes 8-11 with their top 2 bits above those of 0-3.
  for (let j = 0; j < 4; j++) {
    out[4 + j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
    out[4 + j + 4] = (m[j] & 63) | ((m[j + 4] >> 4) << 6);
    out[4 + j + 8] = (sc[j + 4] & 0xf) | ((m[j + 4] & 0xf) << 4);
  }
  const q = new Uint8Array(256);
  for (let j = 0; j < 8; j++) {
    const step = Math.fround(d * sc[j]);
    const offset = Math.fround(dmin * m[j]);
    for (let l = 0; l < 32; l++) q[32 * j + l] = step > 0 ? clamp(Math.round((x[32 * j + l] + offset) / step), 0, 15) : 0;
  }
  // Sub-blocks 2c and 2c+1 share 32 bytes: the first in the low nibbles, the second in the high ones.
  for (let c = 0; c < 4; c++) for (let l = 0; l < 32; l++) out[16 + 32 * c + l] = q[64 * c + l] | (q[64 * c + 32 + l] << 4);
  return out;
}

/** One block_q6_K (210 bytes) of 256 values: 16 sub-blocks of 16 with int8 scales, 6-bit quants. */
export function encodeQ6_KBlock(x: Float32Array): Uint8Array {
  const out = new Uint8Array(210);
  const groupScales: number[] = [];
  for (let g = 0; g < 16; g++) groupScales.push(Math.max(...x.subarray(16 * g, 16 * g + 16).map(Math.abs)) / 31);
  const d = putHalf(out, 208, Math.max(...groupScales) / 127);
  for (let g = 0; g < 16; g++) {
    // Element i of the block uses scale index 8n + (l / 16) + 2k for n = i / 128, k = (i % 128) / 32,
    // l = i % 32: group g (16 contiguous values) is n = g / 8, k = (g % 8) / 2, h = g % 2.
    const n = Math.floor(g / 8);
    const k = Math.floor((g % 8) / 2);
    const h = g % 2;
    const sc = d > 0 ? clamp(Math.round(groupScales[g] / d), -128, 127) : 0;
    out[192 + 8 * n + h + 2 * k] = sc & 0xff;
    const step = Math.fround(d * sc);
    for (let t = 0; t < 16; t++) {
      const i = 16 * g + t;
      const q = (step !== 0 ? clamp(Math.round(x[i] / step), -32, 31) : 0) + 32;
      const l = 16 * h + t;
      const qlAt = 64 * n + l + (k % 2) * 32;
      out[qlAt] |= k < 2 ? q & 0xf : (q & 0xf) << 4;
      out[128 + 32 * n + l] |= (q >> 4) << (2 * k);
    }
  }
  return out;
}
