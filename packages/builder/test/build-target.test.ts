// buildEngine per target and dtype, with the real native writer: the header's target, the dtype of every
// weight (matrices and norms in the build dtype; biases and builder constants in float32) and the packed
// bytes themselves. Building a cuda engine needs no GPU: only loading it does.
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildEngine, ENGINE_FILE } from '@kiln/builder';
import { convertCheckpoint } from '@kiln/convert';
import { loadNative } from '@kiln/native';

const FIXTURES = path.resolve(__dirname, '../../../fixtures/hf-tiny');
const LIMITS = { maxBatchSize: 2, maxSeqLen: 64 };

let root: string;
let llama: string;
let qwen2: string;
beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-build-target-'));
  llama = path.join(root, 'llama');
  qwen2 = path.join(root, 'qwen2');
  // Both fixtures are stored in float32: every other dtype below is the builder's cast.
  await convertCheckpoint({ modelDir: path.join(FIXTURES, 'llama'), outputDir: llama });
  await convertCheckpoint({ modelDir: path.join(FIXTURES, 'qwen2'), outputDir: qwen2 });
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

async function inspect(engineDir: string) {
  const config = JSON.parse(await fs.readFile(path.join(engineDir, 'config.json'), 'utf8'));
  const inspection = await loadNative().inspectEngine(path.join(engineDir, ENGINE_FILE));
  const header = JSON.parse(inspection.headerJson);
  const dtypes = new Map<string, string>(inspection.weights.map((w) => [w.name, w.dtype]));
  return { config, header, weights: inspection.weights, dtypes };
}

/** bfloat16 bits of a float32, rounding to nearest even (as the writer's cast does). */
function bfloat16Bits(value: number): number {
  const bits = new Uint32Array(new Float32Array([value]).buffer)[0];
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

describe('buildEngine targets', () => {
  it('writes a cuda header target and bfloat16 weights, float32 biases and constants', async () => {
    const engineDir = path.join(root, 'qwen2-cuda-bf16');
    const result = await buildEngine({
      checkpointDir: qwen2,
      outputDir: engineDir,
      config: { ...LIMITS, target: 'cuda', dtype: 'bfloat16', computeCapability: '8.0' },
    });
    expect(result.config).toMatchObject({ target: 'cuda', dtype: 'bfloat16', computeCapability: '8.0' });
    expect(result.config).not.toHaveProperty('isa');

    const { config, header, weights, dtypes } = await inspect(engineDir);
    const target = { backend: 'cuda', computeCapability: '8.0', activationDType: 'bfloat16' };
    expect(header.target).toEqual(target);
    expect(config.target).toEqual(target);
    expect(config.buildConfig).toEqual(result.config);

    const ofKind = (pattern: RegExp) => weights.filter((w) => pattern.test(w.name));
    const biases = ofKind(/\.bias$/);
    expect(biases.length).toBeGreaterThan(0); // Qwen2's q/k/v biases
    for (const bias of biases) expect(bias.dtype).toBe('float32');
    expect(ofKind(/^rope\.inv_freq/).map((w) => w.dtype)).toEqual(['float32']);
    const others = weights.filter((w) => !biases.includes(w) && !/^rope\./.test(w.name));
    expect(others.length).toBeGreaterThan(0);
    for (const weight of others) expect([weight.name, weight.dtype]).toEqual([weight.name, 'bfloat16']);
    expect(dtypes.get('transformer.layers.0.attention.q+k+v.weight')).toBe('bfloat16');
  });

  it('packs each weight cast to the build dtype', async () => {
    const engineDir = path.join(root, 'llama-cuda-bf16');
    await buildEngine({ checkpointDir: llama, outputDir: engineDir, config: { ...LIMITS, target: 'cuda', dtype: 'bfloat16', computeCapability: '9.0' } });
    const { header, weights } = await inspect(engineDir);
    expect(header.target).toEqual({ backend: 'cuda', computeCapability: '9.0', activationDType: 'bfloat16' });

    // The checkpoint's float32 table, read straight from its safetensors file.
    const checkpointFile = await fs.readFile(path.join(llama, 'rank0.safetensors'));
    const checkpointHeaderLength = Number(checkpointFile.readBigUInt64LE(0));
    const checkpointHeader = JSON.parse(checkpointFile.subarray(8, 8 + checkpointHeaderLength).toString('utf8'));
    const name = 'transformer.vocab_embedding.weight';
    const [begin, end] = checkpointHeader[name].data_offsets as [number, number];
    const start = 8 + checkpointHeaderLength + begin;
    const float32 = new Float32Array(checkpointFile.buffer.slice(checkpointFile.byteOffset + start, checkpointFile.byteOffset + start + end - begin));

    // The engine's copy: at dataStart + offset (docs/engine-format.md).
    const engineFile = await fs.readFile(path.join(engineDir, ENGINE_FILE));
    const dataStart = Math.ceil((24 + Number(engineFile.readBigUInt64LE(16))) / 64) * 64;
    const entry = weights.find((w) => w.name === name)!;
    expect(entry).toMatchObject({ dtype: 'bfloat16', byteLength: float32.length * 2 });
    for (let i = 0; i < float32.length; i += 97) {
      expect(engineFile.readUInt16LE(dataStart + entry.offset + 2 * i)).toBe(bfloat16Bits(float32[i]));
    }
  });

  it('keeps the checkpoint dtype by default and writes the cpu target as before', async () => {
    const engineDir = path.join(root, 'llama-cpu');
    const result = await buildEngine({ checkpointDir: llama, outputDir: engineDir, config: { ...LIMITS, isa: 'generic' } });
    expect(result.config).toMatchObject({ target: 'cpu', isa: 'generic', dtype: 'float32' });
    expect(result.config).not.toHaveProperty('computeCapability');
    const { config, header, weights } = await inspect(engineDir);
    expect(header.target).toEqual({ backend: 'cpu', isa: 'generic' });
    expect(config.target).toEqual({ backend: 'cpu', isa: 'generic' });
    for (const weight of weights) expect(weight.dtype).toBe('float32');
  });

  it('casts a cpu build to float16 when asked', async () => {
    const engineDir = path.join(root, 'llama-cpu-f16');
    await buildEngine({ checkpointDir: llama, outputDir: engineDir, config: { ...LIMITS, isa: 'generic', dtype: 'float16' } });
    const { header, dtypes } = await inspect(engineDir);
    expect(header.target).toEqual({ backend: 'cpu', isa: 'generic' });
    expect(dtypes.get('transformer.layers.0.attention.q+k+v.weight')).toBe('float16');
    expect(dtypes.get('rope.inv_freq.0')).toBe('float32');
  });

  it('gives each target, dtype and compute capability its own build hash', async () => {
    const outputDir = path.join(root, 'hashes');
    const hashOf = async (config: Parameters<typeof buildEngine>[0]['config']) =>
      (await buildEngine({ checkpointDir: llama, outputDir, config: { ...LIMITS, ...config } })).buildHash;
    const hashes = [
      await hashOf({ isa: 'generic' }),
      await hashOf({ isa: 'generic', dtype: 'bfloat16' }),
      await hashOf({ target: 'cuda', computeCapability: '9.0', dtype: 'float32' }),
      await hashOf({ target: 'cuda', computeCapability: '9.0', dtype: 'bfloat16' }),
      await hashOf({ target: 'cuda', computeCapability: '8.0', dtype: 'bfloat16' }),
    ];
    expect(new Set(hashes).size).toBe(hashes.length);
    // The same build again is found by its hash.
    const again = await buildEngine({ checkpointDir: llama, outputDir, config: { ...LIMITS, target: 'cuda', computeCapability: '8.0', dtype: 'bfloat16' } });
    expect(again).toMatchObject({ cached: true, buildHash: hashes[4] });
  });
});

describe('activation dtypes of a 16-bit cuda engine', () => {
  it('stores exactly the values GEMMs read in bfloat16, the rest (logits included) in float32, without overlaps', async () => {
    const engineDir = path.join(root, 'llama-cuda-bf16-values');
    await buildEngine({ checkpointDir: llama, outputDir: engineDir, config: { ...LIMITS, target: 'cuda', dtype: 'bfloat16' } });
    const { header } = await inspect(engineDir);
    type Value = { name: string; rows: string; cols: number; offset: number; rowStride: number; dtype?: string };
    const values = header.values as Value[];
    const linearInputs = new Set<number>();
    for (const op of header.ops as Array<{ op: string; inputs: number[]; outputs: number[]; attrs?: { prologue?: string } }>) {
      // A linear with a norm prologue multiplies the normed copy, its last output (fuse-linear-neighbours).
      if (op.op === 'linear' && op.attrs?.prologue) linearInputs.add(op.outputs[op.outputs.length - 1]);
      else if (op.op === 'linear' || op.op === 'moe') linearInputs.add(op.inputs[0]);
    }
    expect(linearInputs.size).toBeGreaterThan(0);
    values.forEach((value, index) => {
      expect(value.dtype).toBe(linearInputs.has(index) ? 'bfloat16' : undefined);
    });
    expect(values[header.outputs.logits].dtype).toBeUndefined();

    // Every value's bytes for its most rows stay inside the arena.
    const maxRows = (v: Value) => (v.rows === 'tokens' ? header.limits.maxNumTokens : header.limits.maxLogitRows);
    for (const v of values) {
      const size = v.dtype ? 2 : 4;
      expect(v.offset % size).toBe(0);
      expect(v.offset + size * ((maxRows(v) - 1) * v.rowStride + v.cols)).toBeLessThanOrEqual(header.arena.bytes);
    }

    // The same checkpoint for the cpu has no dtype on any value.
    const cpuDir = path.join(root, 'llama-cpu-values');
    await buildEngine({ checkpointDir: llama, outputDir: cpuDir, config: { ...LIMITS, target: 'cpu' } });
    const cpu = await inspect(cpuDir);
    expect((cpu.header.values as Value[]).every((v) => v.dtype === undefined)).toBe(true);
  });
});

describe('linears with fused neighbours in a cuda engine', () => {
  type Value = { rows: string; cols: number; offset: number; rowStride: number; dtype?: string };
  type Op = { op: string; inputs: number[]; outputs: number[]; attrs?: Record<string, unknown>; weights?: Record<string, number> };
  const span = (v: Value, rows: number) => [v.offset, v.offset + (v.dtype ? 2 : 4) * ((rows - 1) * v.rowStride + v.cols)];
  const overlap = (a: number[], b: number[]) => a[0] < b[1] && b[0] < a[1];

  it('takes each layer\'s norms, rope, SwiGLU and residual adds into its linears, bfloat16, int8, int4 and FP8 cuda engines', async () => {
    const cudaDir = path.join(root, 'llama-cuda-fused');
    await buildEngine({ checkpointDir: llama, outputDir: cudaDir, config: { ...LIMITS, target: 'cuda', dtype: 'bfloat16' } });
    const { header } = await inspect(cudaDir);
    const ops = header.ops as Op[];
    const layer = (op: Op) => (op.op === 'linear' ? `linear(${String(op.attrs?.prologue ?? '')}/${String(op.attrs?.epilogue ?? '')})` : op.op);
    // embedding, then per layer: QKV with the (residual add and) norm and rope, attention, o, gate/up with
    // the residual add, the norm and SwiGLU, down; the last down takes the final residual add, and the
    // final norm goes into the LM head.
    expect(ops.map(layer)).toEqual([
      'embedding',
      ...['linear(rms_norm/rope)', 'attention', 'linear(/)', 'linear(add_rms_norm/swiglu)', 'linear(/)'],
      ...['linear(add_rms_norm/rope)', 'attention', 'linear(/)', 'linear(add_rms_norm/swiglu)', 'linear(/residual)'],
      'gather_rows',
      'linear(rms_norm/)',
    ]);
    expect(ops.some((op) => ['rope', 'swiglu', 'add', 'add_rms_norm', 'rms_norm'].includes(op.op))).toBe(false);
    // Each QKV linear stores its layer's K and V rows; its attention does not.
    const qkv = ops.filter((op) => op.attrs?.epilogue === 'rope');
    const attention = ops.filter((op) => op.op === 'attention');
    expect(qkv.map((op) => op.attrs?.kvLayer)).toEqual(attention.map((op) => op.attrs?.layer));
    expect(attention.every((op) => op.attrs?.kvStored === true)).toBe(true);

    // Nothing a fused linear writes shares bytes with what it reads: its GEMV reads every input row while
    // other blocks write the outputs.
    const values = header.values as Value[];
    const bytes = (v: Value) => span(v, v.rows === 'tokens' ? header.limits.maxNumTokens : header.limits.maxLogitRows);
    for (const op of ops.filter((o) => o.op === 'linear' && (o.attrs?.prologue || o.attrs?.epilogue))) {
      for (const out of op.outputs) {
        for (const input of op.inputs) expect(overlap(bytes(values[out]), bytes(values[input]))).toBe(false);
      }
    }

    // The cpu engine of the same checkpoint keeps the ops apart.
    const cpuDir = path.join(root, 'llama-cpu-unfused');
    await buildEngine({ checkpointDir: llama, outputDir: cpuDir, config: { ...LIMITS, target: 'cpu' } });
    const cpu = (await inspect(cpuDir)).header.ops as Op[];
    expect(cpu.every((op) => op.attrs?.prologue === undefined && op.attrs?.epilogue === undefined)).toBe(true);
    expect(cpu.filter((op) => op.op === 'rope')).toHaveLength(4);

    // int8, int4 and FP8 matrices have the fused kernel too (W8A16 / W4A16 / FP8 at batch 1): the same ops.
    for (const quantization of ['int8', 'int4', 'fp8'] as const) {
      const dir = path.join(root, `llama-cuda-${quantization}-fused`);
      await buildEngine({ checkpointDir: llama, outputDir: dir, config: { ...LIMITS, target: 'cuda', dtype: 'bfloat16', quantization, ...(quantization === 'int4' ? { groupSize: 32 } : {}) } });
      expect(((await inspect(dir)).header.ops as Op[]).map(layer)).toEqual(ops.map(layer));
    }

    // A cuda engine whose matrices have no fused kernel (float32 here) keeps the ops apart.
    const f32Dir = path.join(root, 'llama-cuda-f32-unfused');
    await buildEngine({ checkpointDir: llama, outputDir: f32Dir, config: { ...LIMITS, target: 'cuda', dtype: 'float32' } });
    const f32 = (await inspect(f32Dir)).header.ops as Op[];
    expect(f32.filter((op) => op.op === 'rope')).toHaveLength(4);
    expect(f32.filter((op) => op.op === 'linear').length).toBeGreaterThan(0);
    expect(f32.every((op) => op.attrs?.prologue === undefined && op.attrs?.epilogue === undefined)).toBe(true);
  });
});
