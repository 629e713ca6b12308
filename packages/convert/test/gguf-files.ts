// Test-only GGUF files written byte by byte from the format description (ggml docs/gguf.md), so the
// reader is checked against an independent writer, and so broken files can be made on purpose.

export type Value =
  | { type: 'UINT32' | 'INT32' | 'FLOAT32' | 'UINT64'; value: number }
  | { type: 'BOOL'; value: boolean }
  | { type: 'STRING'; value: string }
  | { type: 'ARRAY'; itemType: 'STRING'; value: string[] }
  | { type: 'ARRAY'; itemType: 'INT32' | 'FLOAT32' | 'UINT32'; value: number[] };

const VALUE_TYPE = { UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9, UINT64: 10 } as const;
export const GGML_TYPE = { F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q8_0: 8, Q4_K: 12, Q5_K: 13, Q6_K: 14, BF16: 30 } as const;

export interface RawTensor {
  name: string;
  /** ggml ne[]: innermost first. */
  dims: number[];
  type: number;
  data: Uint8Array;
}

class Bytes {
  chunks: Buffer[] = [];
  length = 0;
  push(b: Buffer): void {
    this.chunks.push(b);
    this.length += b.length;
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.push(b);
  }
  i32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeInt32LE(v);
    this.push(b);
  }
  u64(v: number | bigint): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  f32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeFloatLE(v);
    this.push(b);
  }
  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.push(b);
  }
}

function scalar(w: Bytes, type: string, v: unknown): void {
  switch (type) {
    case 'UINT32': return w.u32(v as number);
    case 'INT32': return w.i32(v as number);
    case 'FLOAT32': return w.f32(v as number);
    case 'UINT64': return w.u64(v as number);
    case 'BOOL': return w.push(Buffer.from([v ? 1 : 0]));
    case 'STRING': return w.str(v as string);
  }
  throw new Error(type);
}

/** A GGUF v3 file: metadata in order, tensors laid out one after another at 32-byte alignment. */
export function ggufBytes(metadata: Record<string, Value>, tensors: RawTensor[]): Buffer {
  const w = new Bytes();
  w.u32(0x46554747);
  w.u32(3);
  w.u64(tensors.length);
  w.u64(Object.keys(metadata).length);
  for (const [key, v] of Object.entries(metadata)) {
    w.str(key);
    w.u32(VALUE_TYPE[v.type]);
    if (v.type === 'ARRAY') {
      w.u32(VALUE_TYPE[v.itemType]);
      w.u64(v.value.length);
      for (const item of v.value) scalar(w, v.itemType, item);
    } else {
      scalar(w, v.type, v.value);
    }
  }
  const pad = (n: number) => Math.ceil(n / 32) * 32;
  let offset = 0;
  for (const t of tensors) {
    w.str(t.name);
    w.u32(t.dims.length);
    for (const d of t.dims) w.u64(d);
    w.u32(t.type);
    w.u64(offset);
    offset += pad(t.data.length);
  }
  w.push(Buffer.alloc(pad(w.length) - w.length));
  for (const t of tensors) {
    w.push(Buffer.from(t.data));
    w.push(Buffer.alloc(pad(t.data.length) - t.data.length));
  }
  return Buffer.concat(w.chunks);
}

// ---- Reference dequantizers, written from ggml-common.h's block layouts and ggml-quants.c's
// dequantize_row_* in float32 arithmetic (Math.fround after every operation, in ggml's order), so the
// native results must match bit for bit.

const f = Math.fround;

export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

function half(b: Uint8Array, at: number): number {
  return halfToFloat(b[at] | (b[at + 1] << 8));
}

function scaleMin(j: number, q: Uint8Array): [number, number] {
  if (j < 4) return [q[j] & 63, q[j + 4] & 63];
  return [(q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4)];
}

export const BLOCK = {
  [GGML_TYPE.Q4_0]: [32, 18],
  [GGML_TYPE.Q4_1]: [32, 20],
  [GGML_TYPE.Q8_0]: [32, 34],
  [GGML_TYPE.Q4_K]: [256, 144],
  [GGML_TYPE.Q5_K]: [256, 176],
  [GGML_TYPE.Q6_K]: [256, 210],
} as Record<number, [number, number]>;

/** Reference dequantization of one block of a quantized type. */
export function dequantizeBlock(type: number, b: Uint8Array): number[] {
  const y: number[] = [];
  switch (type) {
    case GGML_TYPE.Q4_0: {
      const d = half(b, 0);
      for (let j = 0; j < 16; j++) y[j] = f(((b[2 + j] & 0xf) - 8) * d);
      for (let j = 0; j < 16; j++) y[j + 16] = f(((b[2 + j] >> 4) - 8) * d);
      return y;
    }
    case GGML_TYPE.Q4_1: {
      const d = half(b, 0);
      const m = half(b, 2);
      for (let j = 0; j < 16; j++) y[j] = f(f((b[4 + j] & 0xf) * d) + m);
      for (let j = 0; j < 16; j++) y[j + 16] = f(f((b[4 + j] >> 4) * d) + m);
      return y;
    }
    case GGML_TYPE.Q8_0: {
      const d = half(b, 0);
      for (let j = 0; j < 32; j++) y[j] = f(((b[2 + j] << 24) >> 24) * d);
      return y;
    }
    case GGML_TYPE.Q4_K:
    case GGML_TYPE.Q5_K: {
      const d = half(b, 0);
      const dmin = half(b, 2);
      const scales = b.subarray(4, 16);
      const five = type === GGML_TYPE.Q5_K;
      const qh = b.subarray(16, 48);
      const qs = b.subarray(five ? 48 : 16);
      for (let j = 0; j < 4; j++) {
        // Sub-blocks 2j and 2j+1 share 32 bytes: low nibbles then high nibbles; Q5_K's fifth bits are
        // bits 2j and 2j+1 of qh.
        for (let half2 = 0; half2 < 2; half2++) {
          const [sc, m] = scaleMin(2 * j + half2, scales);
          const d1 = f(d * sc);
          const m1 = f(dmin * m);
          for (let l = 0; l < 32; l++) {
            const byte = qs[32 * j + l];
            let q = half2 === 0 ? byte & 0xf : byte >> 4;
            if (five && qh[l] & (1 << (2 * j + half2))) q += 16;
            y.push(f(f(d1 * q) - m1));
          }
        }
      }
      return y;
    }
    case GGML_TYPE.Q6_K: {
      const ql = b.subarray(0, 128);
      const qh = b.subarray(128, 192);
      const sc = b.subarray(192, 208);
      const d = half(b, 208);
      for (let i = 0; i < 256; i++) {
        // Element i: half n = i / 128 of the block, quarter k = (i % 128) / 32, lane l = i % 32.
        const n = Math.floor(i / 128);
        const k = Math.floor((i % 128) / 32);
        const l = i % 32;
        const low = ql[64 * n + l + (k % 2) * 32]; // quarters 0 and 2 share bytes l, 1 and 3 bytes l + 32
        const nibble = k < 2 ? low & 0xf : low >> 4;
        const high = (qh[32 * n + l] >> (2 * k)) & 3;
        const q = (nibble | (high << 4)) - 32;
        const scale = (sc[8 * n + Math.floor(l / 16) + 2 * k] << 24) >> 24;
        y[i] = f(f(d * scale) * q);
      }
      return y;
    }
  }
  throw new Error(`no reference for type ${type}`);
}

/** float32 -> IEEE half bits, round to nearest even (as ggml's GGML_FP32_TO_FP16 on x86 F16C). */
export function floatToHalf(value: number): number {
  const f32 = new Float32Array([value]);
  const x = new Uint32Array(f32.buffer)[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    return sign | (half + (rem > mid || (rem === mid && (half & 1)) ? 1 : 0));
  }
  const half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  const rounded = half + (rem > 0x1000 || (rem === 0x1000 && (half & 1)) ? 1 : 0);
  e = 0;
  return sign | rounded;
}

/** quantize_row_q8_0_ref for one block of 32 floats. */
export function quantizeQ8_0Block(x: Float32Array): Uint8Array {
  let amax = 0;
  for (const v of x) amax = Math.max(amax, Math.abs(v));
  const d = f(amax / 127);
  const id = d !== 0 ? f(1 / d) : 0;
  const out = new Uint8Array(34);
  const h = floatToHalf(d);
  out[0] = h & 0xff;
  out[1] = h >> 8;
  // roundf: half away from zero.
  for (let j = 0; j < 32; j++) {
    const v = f(x[j] * id);
    out[2 + j] = (Math.sign(v) * Math.round(Math.abs(v))) & 0xff;
  }
  return out;
}

/** quantize_row_q4_0_ref for one block of 32 floats. */
export function quantizeQ4_0Block(x: Float32Array): Uint8Array {
  let amax = 0;
  let max = 0;
  for (const v of x) {
    if (amax < Math.abs(v)) {
      amax = Math.abs(v);
      max = v;
    }
  }
  const d = f(max / -8);
  const id = d !== 0 ? f(1 / d) : 0;
  const out = new Uint8Array(18);
  const h = floatToHalf(d);
  out[0] = h & 0xff;
  out[1] = h >> 8;
  for (let j = 0; j < 16; j++) {
    const q0 = Math.min(15, Math.trunc(f(f(x[j] * id) + 8.5)));
    const q1 = Math.min(15, Math.trunc(f(f(x[16 + j] * id) + 8.5)));
    out[2 + j] = q0 | (q1 << 4);
  }
  return out;
}
