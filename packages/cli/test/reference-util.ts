// Helpers for the tests that compare Kiln with transformers' reference outputs.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export const repoRoot = path.resolve(__dirname, '../../..');
export const kilnBin = path.join(repoRoot, 'packages/cli/dist/bin/kiln.js');
export const fixturesDir = path.join(repoRoot, 'fixtures/hf-tiny');

export interface KilnRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the built `kiln` command as a user would. */
export function kiln(args: string[], env: NodeJS.ProcessEnv = {}, cwd?: string): KilnRun {
  const result = spawnSync(process.execPath, [kilnBin, ...args], {
    encoding: 'utf8',
    cwd,
    env: { ...process.env, ...env },
    timeout: 120_000,
  });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

export function kilnOk(args: string[], env: NodeJS.ProcessEnv = {}, cwd?: string): KilnRun {
  const run = kiln(args, env, cwd);
  if (run.status !== 0) throw new Error(`kiln ${args.join(' ')} exited ${run.status}: ${run.stderr}`);
  return run;
}

/** Reads the float32 tensors of a safetensors file (test data only; the product maps files natively). */
export function readFloat32Tensors(file: string): Map<string, { shape: number[]; data: Float32Array }> {
  const bytes = fs.readFileSync(file);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8')) as Record<
    string,
    { dtype: string; shape: number[]; data_offsets: [number, number] }
  >;
  const tensors = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    if (info.dtype !== 'F32') throw new Error(`${file}: ${name} is ${info.dtype}, expected F32`);
    const start = 8 + headerLength + info.data_offsets[0];
    const slice = bytes.subarray(start, 8 + headerLength + info.data_offsets[1]);
    const data = new Float32Array(slice.byteLength / 4);
    Buffer.from(data.buffer).set(slice);
    tensors.set(name, { shape: info.shape, data });
  }
  return tensors;
}

/** ‖out − ref‖ / ‖ref‖ over rows [from, from + count) of a [rows, cols] reference. */
export function relativeError(out: Float32Array, ref: Float32Array, refRowStart: number, cols: number): number {
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < out.length; i++) {
    const r = ref[refRowStart * cols + i];
    diff += (out[i] - r) ** 2;
    norm += r ** 2;
  }
  return Math.sqrt(diff / norm);
}

/** Largest per-row relative error between out [rows, cols] and ref rows starting at refRowStart. */
export function worstRowError(out: Float32Array, ref: Float32Array, refRowStart: number, cols: number): number {
  let worst = 0;
  for (let row = 0; row < out.length / cols; row++) {
    const o = out.subarray(row * cols, (row + 1) * cols);
    worst = Math.max(worst, relativeError(o, ref, refRowStart + row, cols));
  }
  return worst;
}
