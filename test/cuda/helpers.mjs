// Shared by the CUDA suite (test/cuda/*.test.mjs). The suite runs where only Node.js, the built
// packages (their dist/ folders) and the production node_modules are: node:test and node:assert, no
// Jest, no TypeScript. Not a test file itself (node --test runs only *.test.mjs here).
//
// KILN_CUDA_SUITE_TARGET=cpu runs the same checks with CPU engines instead of CUDA ones (the bfloat16
// variants then use bfloat16 weights with float32 activations): a dry run of the suite's own logic
// on a machine without a GPU. Default: cuda.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const kilnBin = path.join(repoRoot, 'packages', 'cli', 'dist', 'bin', 'kiln.js');
export const fixturesDir = path.join(repoRoot, 'fixtures', 'hf-tiny');
export const scribeDir = path.join(repoRoot, 'packages', 'scribe-7m', 'model');

/** The workspace packages are CommonJS: required, not imported (no reliance on named-export detection). */
const require = createRequire(import.meta.url);
export const requirePackage = (name) => require(name);

export const target = process.env.KILN_CUDA_SUITE_TARGET ?? 'cuda';
if (target !== 'cuda' && target !== 'cpu') {
  throw new Error(`KILN_CUDA_SUITE_TARGET must be "cuda" or "cpu", got ${JSON.stringify(target)}`);
}
export const onCuda = target === 'cuda';

/** Where result tables go: KILN_RESULTS_DIR, else $OUT (the GPU machine's), else a temporary folder. */
export const resultsDir = process.env.KILN_RESULTS_DIR || process.env.OUT || path.join(os.tmpdir(), 'kiln-cuda-results');

export function writeResult(name, text) {
  fs.mkdirSync(resultsDir, { recursive: true });
  const file = path.join(resultsDir, name);
  fs.writeFileSync(file, text);
  return file;
}

/** A fresh folder under the system's temporary folder; removed by the returned function. */
export function makeTmpDir(prefix) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `kiln-cuda-${prefix}-`));
  return { dir, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** How many independent jobs (CLI runs) the suite starts at once. */
export const jobs = Math.max(1, Number(process.env.KILN_SUITE_JOBS) || Math.min(8, Math.max(1, os.availableParallelism() - 1)));

/** Runs `items` through `fn` with at most `limit` in flight; results in order. */
export async function mapLimit(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index], index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

// ---------------------------------------------------------------------------------------------------
// The kiln command, as a user runs it

/** Runs the built `kiln` command; resolves with its exit status and output (never rejects on a non-zero exit). */
export function kiln(args, { env = {}, timeout = 600_000 } = {}) {
  return new Promise((resolve) => {
    execFile(process.execPath, [kilnBin, ...args], { env: { ...process.env, ...env }, timeout, maxBuffer: 64 << 20, encoding: 'utf8' }, (error, stdout, stderr) => {
      const status = error ? (typeof error.code === 'number' ? error.code : (error.signal ?? 'error')) : 0;
      resolve({ status, stdout, stderr });
    });
  });
}

export async function kilnOk(args, options) {
  const run = await kiln(args, options);
  if (run.status !== 0) throw new Error(`kiln ${args[0]} exited ${run.status}: ${run.stderr.trim()}\n(the command: kiln ${args.join(' ')})`);
  return run;
}

/**
 * The `kiln build` flags that pick the backend and activation dtype: on cuda `--target cuda --dtype D`;
 * on cpu none (a cpu engine keeps its checkpoint's weight dtype: convert at D instead, see
 * checkpointDType).
 */
export function targetFlags(dtype) {
  return onCuda ? ['--target', 'cuda', '--dtype', dtype] : [];
}

/** The dtype to convert at for an engine of `dtype`: float32 on cuda (the build casts), `dtype` on cpu. */
export function checkpointDType(dtype) {
  return onCuda ? 'float32' : dtype;
}

/**
 * Converts `modelDir` (once per checkpoint dtype) and builds an engine of `dtype` for the suite's
 * target with `buildFlags`; returns the engine folder.
 */
export async function convertAndBuild({ workDir, modelDir, name, dtype = 'float32', buildFlags = [], checkpoints = new Map() }) {
  const ckptDType = checkpointDType(dtype);
  const checkpointDir = path.join(workDir, `${name}-checkpoint-${ckptDType}`);
  if (!checkpoints.has(checkpointDir)) {
    checkpoints.set(checkpointDir, kilnOk(['convert', '--model', modelDir, '--output', checkpointDir, '--dtype', ckptDType]));
  }
  await checkpoints.get(checkpointDir);
  const engineDir = path.join(workDir, `${name}-engine-${target}-${dtype}`);
  await kilnOk(['build', '--checkpoint', checkpointDir, '--output', engineDir, ...targetFlags(dtype), ...buildFlags]);
  const config = JSON.parse(fs.readFileSync(path.join(engineDir, 'config.json'), 'utf8'));
  if (config.target?.backend !== target) {
    throw new Error(`${engineDir}: built for ${JSON.stringify(config.target)}, expected backend ${target}`);
  }
  if (onCuda && config.target.activationDType !== dtype) {
    throw new Error(`${engineDir}: activationDType ${config.target.activationDType}, expected ${dtype}`);
  }
  return engineDir;
}

// ---------------------------------------------------------------------------------------------------
// Data

/** Reads the float32 tensors of a safetensors file: 8-byte LE header length, JSON header, data. */
export function readSafetensors(file) {
  const bytes = fs.readFileSync(file);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8'));
  const tensors = new Map();
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    if (info.dtype !== 'F32') throw new Error(`${file}: ${name} is ${info.dtype}, expected F32`);
    const [begin, end] = info.data_offsets;
    const start = 8 + headerLength + begin;
    if (start + (end - begin) > bytes.length) throw new Error(`${file}: ${name} runs past the end of the file`);
    const data = new Float32Array(bytes.buffer.slice(bytes.byteOffset + start, bytes.byteOffset + start + (end - begin)));
    const elements = info.shape.reduce((a, b) => a * b, 1);
    if (data.length !== elements) throw new Error(`${file}: ${name} has ${data.length} values for shape [${info.shape}]`);
    tensors.set(name, { shape: info.shape, data });
  }
  return tensors;
}

/** Writes float32 tensors as safetensors (for weights that writeEngine casts to another dtype). */
export function writeSafetensors(file, tensors) {
  const header = {};
  let offset = 0;
  for (const { name, shape, data } of tensors) {
    header[name] = { dtype: 'F32', shape, data_offsets: [offset, offset + data.byteLength] };
    offset += data.byteLength;
  }
  let text = JSON.stringify(header);
  text += ' '.repeat((8 - (Buffer.byteLength(text) % 8)) % 8);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(Buffer.byteLength(text)));
  const parts = [prefix, Buffer.from(text, 'utf8'), ...tensors.map(({ data }) => Buffer.from(data.buffer, data.byteOffset, data.byteLength))];
  fs.writeFileSync(file, Buffer.concat(parts));
}

/** ‖out[row] − ref[refRow]‖ / ‖ref[refRow]‖ over `cols` columns. */
export function rowRelativeError(out, outRow, ref, refRow, cols) {
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < cols; i++) {
    const r = ref[refRow * cols + i];
    diff += (out[outRow * cols + i] - r) ** 2;
    norm += r * r;
  }
  if (norm === 0) return diff === 0 ? 0 : Infinity;
  return Math.sqrt(diff / norm);
}

/** Largest row error of rows [0, rows) of `out` against rows [refRowStart, ...) of `ref`; NaN counts as Infinity. */
export function worstRowError(out, ref, refRowStart, cols, rows = out.length / cols) {
  let worst = 0;
  for (let row = 0; row < rows; row++) {
    const e = rowRelativeError(out, row, ref, refRowStart + row, cols);
    worst = Math.max(worst, Number.isNaN(e) ? Infinity : e);
  }
  return worst;
}

/** Top-1 minus top-2 of one row of a [rows, cols] matrix. */
export function topMargin(data, row, cols) {
  let first = -Infinity;
  let second = -Infinity;
  for (let i = row * cols; i < (row + 1) * cols; i++) {
    const v = data[i];
    if (v > first) {
      second = first;
      first = v;
    } else if (v > second) {
      second = v;
    }
  }
  return first - second;
}

export function argmaxRow(data, row, cols) {
  let best = 0;
  for (let i = 1; i < cols; i++) if (data[row * cols + i] > data[row * cols + best]) best = i;
  return best;
}

/**
 * Greedy tokens of a reduced-precision run against a reference: equal up to the first position k whose
 * reference top-1/top-2 margin (`marginOf(k)`) is below `minMargin`, where the comparison stops (a near
 * tie may break either way). Returns {compared, stoppedAt (k or -1), mismatchAt (-1 if none)}.
 */
export function compareUpToMargin(out, ref, marginOf, minMargin) {
  for (let k = 0; k < ref.length; k++) {
    if (marginOf(k) < minMargin) return { compared: k, stoppedAt: k, mismatchAt: -1 };
    if (out[k] !== ref[k]) return { compared: k, stoppedAt: -1, mismatchAt: k };
  }
  return { compared: ref.length, stoppedAt: -1, mismatchAt: out.length === ref.length ? -1 : ref.length };
}

/** Deterministic random numbers in [0, 1) (mulberry32), as the CPU tests use. */
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `count` seeded prompts of random length in [minLen, maxLen], ids in [3, vocab) (the executor tests' prompts()). */
export function prompts(seed, count, vocab, minLen, maxLen) {
  const random = rng(seed);
  return Array.from({ length: count }, () => {
    const length = minLen + Math.floor(random() * (maxLen - minLen + 1));
    return Array.from({ length }, () => 3 + Math.floor(random() * (vocab - 3)));
  });
}

export function markdownTable(headers, rows) {
  const line = (cells) => `| ${cells.join(' | ')} |`;
  return [line(headers), line(headers.map(() => '---')), ...rows.map(line)].join('\n') + '\n';
}

export const fmt = (x) => (Number.isFinite(x) ? x.toExponential(2) : String(x));

/** The machine the suite runs on, for the headers of result files. */
export function describeMachine() {
  let device = `${os.cpus()[0]?.model ?? 'cpu'} x${os.cpus().length}`;
  if (onCuda) {
    try {
      const info = requirePackage('@kiln/native').loadNative().cudaInfo();
      if (info.devices?.length) device = info.devices.map((d) => `${d.name} (sm ${d.computeCapability})`).join(', ');
    } catch {
      // cudaInfo is the CUDA build's; the tests themselves report its absence.
    }
  }
  return `${target} on ${device}, node ${process.version}, ${new Date().toISOString()}`;
}
