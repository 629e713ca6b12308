// CPU engine precisions of issue 12, each against the float32 engine of the same checkpoint: weight-only
// int8 (`kiln build --quantization int8`) on the llama fixture and on scribe-7m, and bfloat16 engines whose
// linears read bfloat16 inputs (`--bf16-linear-inputs`, the AVX512_BF16 prefill) on scribe-7m. Agreement is teacher-forced: the int8
// engine reads the float32 engine's greedy continuation and its own greedy choice at every position is
// compared with the float32 engine's, so one early near-tie does not derail the rest. The bar is >= 95%
// of positions.
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Engine, Tokenizer } from '@kiln/runtime';
import { scribe7mPath } from '@kiln/scribe-7m';
import { fixturesDir, kiln, kilnOk, repoRoot } from './reference-util';

const GENERATED = 32;
// Token ids for the random-weight fixture; English (KJV, scribe-7m's register) for scribe-7m.
const ID_PROMPTS = [
  [1, 5, 6, 7],
  [1, 300, 41, 9, 77, 12],
  [1, 2000, 18],
  [1, 64, 65, 66, 67, 68, 69, 70],
];
const TEXT_PROMPTS = ['And the LORD said unto Moses,', 'In the beginning God', 'And it came to pass, when', 'Blessed are they that'];

let root: string;
beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'kiln-int8-'));
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

const argmax = (row: Float32Array): number => row.reduce((best, v, i) => (v > row[best] ? i : best), 0);

async function agreement(
  name: string,
  modelDir: string,
  prompts: number[][] | string[],
  variant: string[] = ['--quantization', 'int8'],
): Promise<{ same: number; total: number; report: string }> {
  const checkpoint = path.join(root, `${name}-checkpoint`);
  const engines = { float32: path.join(root, `${name}-float32`), int8: path.join(root, `${name}-int8`) };
  const common = ['--max-batch-size', '1', '--max-seq-len', '64', '--gather-context-logits'];
  if (!(await fs.stat(engines.float32).catch(() => null))) {
    kilnOk(['convert', '--model', modelDir, '--output', checkpoint, '--dtype', 'float32']);
    kilnOk(['build', '--checkpoint', checkpoint, '--output', engines.float32, ...common]);
  }
  // int8 engines at <name>-int8 (the report test reads one), int4 at <name>-int4-g<group>, others <name>-variant.
  if (variant[0] !== '--quantization') engines.int8 = path.join(root, `${name}-variant`);
  else if (variant[1] !== 'int8') engines.int8 = path.join(root, `${name}-${variant.slice(1).join('-').replace(/[^a-z0-9-]/gi, '')}`);
  const built = kilnOk(['build', '--checkpoint', checkpoint, '--output', engines.int8, ...common, ...variant]);
  const reference = await Engine.load(engines.float32, { numThreads: 2 });
  const quantized = await Engine.load(engines.int8, { numThreads: 2 });
  try {
    const vocab = reference.vocabSize;
    let same = 0;
    let total = 0;
    const tokenizer = typeof prompts[0] === 'string' ? await Tokenizer.load(engines.float32) : undefined;
    for (const prompt of prompts) {
      const ids = typeof prompt === 'string' ? tokenizer!.encode(prompt) : prompt.map((id) => id % vocab);
      const { outputIds } = await reference.generate(ids, { maxTokens: GENERATED, ignoreEos: true });
      const forced = [...ids, ...outputIds.slice(0, -1)];
      const { contextLogits } = await quantized.generate(forced, { maxTokens: 1, ignoreEos: true, returnContextLogits: true });
      for (let j = 0; j < outputIds.length; j++) {
        const position = ids.length - 1 + j;
        same += argmax(contextLogits!.subarray(position * vocab, (position + 1) * vocab)) === outputIds[j] ? 1 : 0;
        total++;
      }
    }
    return { same, total, report: built.stdout };
  } finally {
    reference.dispose();
    quantized.dispose();
  }
}

describe('kiln build --quantization int8', () => {
  test.each([
    ['llama', path.join(fixturesDir, 'llama'), ID_PROMPTS],
    ['scribe-7m', scribe7mPath, TEXT_PROMPTS],
  ] as const)('%s: int8 greedy tokens equal the float32 engine on >= 95%% of positions', async (name, modelDir, prompts) => {
    const { same, total, report } = await agreement(name, modelDir, prompts as number[][] | string[]);
    expect(report).toMatch(/Quantized \d+ matrices to int8: RMS relative error [0-9.]+%-[0-9.]+%/);
    expect(same / total).toBeGreaterThanOrEqual(0.95);
    process.stderr.write(`${name}: int8 agrees with float32 on ${same}/${total} greedy positions\n`);
  });

  test('the engine directory keeps the per-matrix error report', async () => {
    const report = JSON.parse(await fs.readFile(path.join(root, 'llama-int8', 'quantization.json'), 'utf8'));
    expect(report.method).toBe('int8 per-channel');
    for (const w of report.weights) {
      // Round to nearest: at most half a step (max |w| / 127 / 2) per element.
      expect(w.maxRelativeError).toBeLessThanOrEqual(0.5 / 127 + 1e-7);
      expect(w.rmsRelativeError).toBeGreaterThan(0);
      expect(w.rmsRelativeError).toBeLessThan(0.02);
    }
  });

  test('scribe-7m bfloat16 with bfloat16 linear inputs: greedy tokens equal the float32 engine on >= 95% of positions', async () => {
    const { same, total, report } = await agreement('scribe-7m', scribe7mPath, TEXT_PROMPTS, ['--dtype', 'bfloat16', '--bf16-linear-inputs']);
    expect(report).toContain('bfloat16 linear inputs');
    const header = JSON.parse(await fs.readFile(path.join(root, 'scribe-7m-variant', 'config.json'), 'utf8'));
    expect(header.buildConfig).toMatchObject({ dtype: 'bfloat16', bf16LinearInputs: true });
    expect(same / total).toBeGreaterThanOrEqual(0.95);
    process.stderr.write(`scribe-7m: bfloat16 with bfloat16 linear inputs agrees with float32 on ${same}/${total} greedy positions\n`);
    const refused = kiln(['build', '--checkpoint', path.join(root, 'scribe-7m-checkpoint'), '--output', path.join(root, 'no'), '--bf16-linear-inputs']);
    expect(refused.stderr).toContain('bf16LinearInputs applies to bfloat16 weights only');
  });

  test('refuses an unknown method', () => {
    const bad = kiln(['build', '--checkpoint', 'x', '--output', 'y', '--quantization', 'int3']);
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toContain('--quantization: expected int8, int4, fp8, q8_0 or none, got "int3"');
  });

  test('writes a cuda int8 engine (int8 matrices, 16-bit linear inputs)', async () => {
    const out = path.join(root, 'scribe-7m-cuda-int8');
    const args = ['build', '--checkpoint', path.join(root, 'scribe-7m-checkpoint'), '--output', out, '--target', 'cuda', '--compute-capability', '9.0', '--dtype', 'bfloat16', '--quantization', 'int8'];
    const built = kiln(args);
    expect(built.status).toBe(0);
    expect(built.stdout).toContain('int8 weights');
    const header = JSON.parse(await fs.readFile(path.join(out, 'config.json'), 'utf8'));
    expect(header.buildConfig).toMatchObject({ target: 'cuda', dtype: 'bfloat16', quantization: 'int8' });
  });
});

// Weight-only int4 (decision 0014), group 32 as issue 12 asks of the CPU, measured by scribe-7m's perplexity
// over the Book of Ruth (KJV, public domain: fixtures/text/ruth-kjv.txt, ~3,550 tokens) against the float32
// engine's. Issue 12 asks for within 5%. All-int4 gives +38.6% (3.127 -> 4.33) on this 6.8 M model, whose
// memorised KJV makes it unusually sensitive (int8: +0.2%; the cost grows with the square of the weights'
// 8% RMS error); int4 builds keep the first layer's linears and the LM head at int8, which halves it:
// +20.4% (3.766), with the cpu's int8 activations. The target is not met (decisions 0014 and 0019 say what
// each alternative measured, GPTQ included, and what would close it), so the bar here is a regression bar at +25%. A broken
// kernel or layout (a wrong nibble order, a wrong group's scale) gives perplexities in the hundreds.
// Greedy agreement is reported beside it (teacher-forced, as for int8).
describe('kiln build --quantization int4', () => {
  const WINDOW = 256; // scribe-7m was trained on 256-token sequences
  async function perplexity(engineDir: string, ids: number[]): Promise<number> {
    const engine = await Engine.load(engineDir, { numThreads: 2 });
    try {
      const vocab = engine.vocabSize;
      let nll = 0;
      let count = 0;
      for (let start = 0; start < ids.length; start += WINDOW) {
        // Each window starts afresh from <|endoftext|> (id 0, scribe-7m's BOS), as in training.
        const chunk = [0, ...ids.slice(start, start + WINDOW)];
        const { contextLogits } = await engine.generate(chunk, { maxTokens: 1, ignoreEos: true, returnContextLogits: true });
        for (let p = 0; p + 1 < chunk.length; p++) {
          const row = contextLogits!.subarray(p * vocab, (p + 1) * vocab);
          let max = -Infinity;
          for (const v of row) max = Math.max(max, v);
          let sum = 0;
          for (const v of row) sum += Math.exp(v - max);
          nll -= row[chunk[p + 1]] - max - Math.log(sum);
          count++;
        }
      }
      return Math.exp(nll / count);
    } finally {
      engine.dispose();
    }
  }

  test('scribe-7m group 32: perplexity over 2,000+ tokens of English within 25% of the float32 engine (issue 12 asks 5%)', async () => {
    const checkpoint = path.join(root, 'scribe-7m-ppl-checkpoint');
    const common = ['--max-batch-size', '1', '--max-seq-len', String(WINDOW + 8), '--gather-context-logits'];
    kilnOk(['convert', '--model', scribe7mPath, '--output', checkpoint, '--dtype', 'float32']);
    const float32 = path.join(root, 'scribe-7m-ppl-float32');
    const int4 = path.join(root, 'scribe-7m-ppl-int4');
    kilnOk(['build', '--checkpoint', checkpoint, '--output', float32, ...common]);
    const built = kilnOk(['build', '--checkpoint', checkpoint, '--output', int4, ...common, '--quantization', 'int4']);
    expect(built.stdout).toContain('int4 (group 32) weights');
    expect(built.stdout).toMatch(/Quantized \d+ matrices to int4 \(\d+ of them int8: the first layer's and the LM head, decision 0014\): RMS relative error [0-9.]+%-[0-9.]+%/);
    const text = await fs.readFile(path.join(repoRoot, 'fixtures/text/ruth-kjv.txt'), 'utf8');
    const encoded = (await Tokenizer.load(float32)).encode(text);
    const ids = encoded[0] === 0 ? encoded.slice(1) : encoded;
    expect(ids.length).toBeGreaterThanOrEqual(2000);
    const reference = await perplexity(float32, ids);
    const quantized = await perplexity(int4, ids);
    process.stderr.write(
      `scribe-7m perplexity over ${ids.length} tokens of Ruth (KJV): float32 ${reference.toFixed(3)}, int4 group 32 ${quantized.toFixed(3)} ` +
        `(${(100 * (quantized / reference - 1)).toFixed(2)}%)\n`,
    );
    expect(quantized / reference).toBeLessThanOrEqual(1.25);
    // Sanity: the model knows this text (it was trained on the KJV), so a broken engine cannot hide here.
    expect(reference).toBeLessThan(20);
  });

  test.each([
    ['llama', path.join(fixturesDir, 'llama'), ID_PROMPTS],
    ['scribe-7m', scribe7mPath, TEXT_PROMPTS],
    // Measured: llama 110/128 (random weights: near-flat logits, so argmax flips easily; its first layer
    // is half of its two, kept at int8), scribe-7m 100/128 (all-int4: 58 and 89).
  ] as const)('%s: int4 group 32 greedy agreement with the float32 engine (reported, with a regression bar)', async (name, modelDir, prompts) => {
    const { same, total, report } = await agreement(name, modelDir, prompts as number[][] | string[], ['--quantization', 'int4']);
    expect(report).toMatch(/Quantized \d+ matrices to int4/);
    process.stderr.write(`${name}: int4 group 32 agrees with float32 on ${same}/${total} greedy positions\n`);
    expect(same / total).toBeGreaterThanOrEqual(0.7);
  });

  test('quantization.json records the method and group size, and int4-sized errors', async () => {
    const report = JSON.parse(await fs.readFile(path.join(root, 'llama-int4', 'quantization.json'), 'utf8'));
    expect(report).toMatchObject({ method: 'int4 per-group', groupSize: 32 });
    const header = JSON.parse(await fs.readFile(path.join(root, 'llama-int4', 'config.json'), 'utf8'));
    expect(header.buildConfig).toMatchObject({ quantization: 'int4', groupSize: 32 });
    // The first layer's linears and the LM head are kept at int8 (decision 0014), the rest int4.
    const int8Names: string[] = report.int8Weights;
    expect(int8Names.length).toBeGreaterThan(0);
    // Layer 0's, and one outside every layer: the LM head (lm_head, or the embedding when tied).
    expect(int8Names.every((n) => /(^|\.)layers\.0\./.test(n) || !/(^|\.)layers\.\d+\./.test(n))).toBe(true);
    expect(int8Names.filter((n) => !/(^|\.)layers\.\d+\./.test(n))).toHaveLength(1);
    let int4Count = 0;
    for (const w of report.weights) {
      if (int8Names.includes(w.name)) {
        expect(w.rmsRelativeError).toBeLessThan(0.01); // 8 bits: ~0.6%
        continue;
      }
      int4Count++;
      expect(/(^|\.)layers\.0\./.test(w.name)).toBe(false);
      // 4 bits: RMS error ~8% of the weights' RMS (random and trained weights alike); an element's error is
      // half a step, or a clamped extreme's (at most ~15% of its row's largest weight).
      expect(w.maxRelativeError).toBeLessThan(0.2);
      expect(w.rmsRelativeError).toBeGreaterThan(0.04);
      expect(w.rmsRelativeError).toBeLessThan(0.1);
    }
    expect(int4Count).toBeGreaterThan(0);
  });

  test('refuses a group size that does not divide a linear input width, naming the weight', () => {
    const out = kiln(['build', '--checkpoint', path.join(root, 'llama-checkpoint'), '--output', path.join(root, 'no'), '--quantization', 'int4', '--group-size', '96']);
    expect(out.status).not.toBe(0);
    expect(out.stderr).toMatch(/int4 quantization: "[^"]+" \[\d+, \d+\] has \d+ input features, not a multiple of the group size 96/);
    const notInt4 = kiln(['build', '--checkpoint', 'x', '--output', 'y', '--group-size', '32']);
    expect(notInt4.stderr).toContain('--group-size: applies to --quantization int4 only');
    const odd = kiln(['build', '--checkpoint', path.join(root, 'llama-checkpoint'), '--output', path.join(root, 'no'), '--quantization', 'int4', '--group-size', '48']);
    expect(odd.stderr).toContain('groupSize must be a multiple of 32');
  });

  test('writes a cuda int4 engine (group 128 by default)', async () => {
    const out = path.join(root, 'scribe-7m-cuda-int4');
    const args = ['build', '--checkpoint', path.join(root, 'scribe-7m-checkpoint'), '--output', out, '--target', 'cuda', '--compute-capability', '9.0', '--dtype', 'bfloat16', '--quantization', 'int4'];
    const built = kiln(args);
    expect(built.status).toBe(0);
    expect(built.stdout).toContain('int4 (group 128) weights');
    const header = JSON.parse(await fs.readFile(path.join(out, 'config.json'), 'utf8'));
    expect(header.buildConfig).toMatchObject({ target: 'cuda', dtype: 'bfloat16', quantization: 'int4', groupSize: 128 });
  });
});
