// The acceptance pattern shared by the reference test files: each fixture converted with --dtype
// float32, built with context logits, and run through `kiln generate` reproduces transformers' context
// and generation logits (1e-4 relative, per row) and its 16 greedy tokens exactly, for all three prompts.
// The fixtures are spread over several test files so Jest runs them in parallel.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fixturesDir, kilnOk, readFloat32Tensors, worstRowError } from './reference-util';

interface Reference {
  prompts: Array<{ input_ids: number[]; greedy: number[]; logits_tensor: string; logits_shape: [number, number] }>;
}

/**
 * One `describe` per fixture, named after it. `modelsDir` defaults to the vendored hf-tiny fixtures;
 * `cwd` is where kiln runs (architecture plugins are found from there).
 */
export function describeReferenceFixtures(fixtures: string[], options: { modelsDir?: string; env?: NodeJS.ProcessEnv; cwd?: string } = {}): void {
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-reference-'));
  afterAll(() => fs.rmSync(workDir, { recursive: true, force: true }));
  const env = options.env ?? {};

  describe.each(fixtures)('%s', (fixture) => {
    const modelDir = path.join(options.modelsDir ?? fixturesDir, fixture);
    const reference = JSON.parse(fs.readFileSync(path.join(modelDir, 'reference.json'), 'utf8')) as Reference;
    const referenceLogits = readFloat32Tensors(path.join(modelDir, 'reference.safetensors'));
    const checkpointDir = path.join(workDir, `${fixture}-checkpoint`);
    const engineDir = path.join(workDir, `${fixture}-engine`);

    beforeAll(() => {
      kilnOk(['convert', '--model', modelDir, '--output', checkpointDir, '--dtype', 'float32'], env, options.cwd);
      kilnOk(['build', '--checkpoint', checkpointDir, '--output', engineDir, '--gather-context-logits'], env, options.cwd);
    });

    test.each([0, 1, 2])('prompt %i: greedy tokens, context and generation logits', (index) => {
      const prompt = reference.prompts[index];
      const logitsFile = path.join(workDir, `${fixture}-${index}.safetensors`);
      const run = kilnOk([
        'generate',
        '--engine', engineDir,
        '--input-ids', prompt.input_ids.join(','),
        '--max-tokens', String(prompt.greedy.length),
        '--ignore-eos',
        '--json',
        '--logits-out', logitsFile,
      ], env, options.cwd);
      const result = JSON.parse(run.stdout) as { outputIds: number[]; finishReason: string };
      expect(result.outputIds).toEqual(prompt.greedy);
      expect(result.finishReason).toBe('length');

      const ref = referenceLogits.get(prompt.logits_tensor)!;
      const vocab = prompt.logits_shape[1];
      const out = readFloat32Tensors(logitsFile);
      const context = out.get('context_logits')!;
      const generation = out.get('generation_logits')!;
      const promptLength = prompt.input_ids.length;
      expect(context.shape).toEqual([promptLength, vocab]);
      expect(generation.shape).toEqual([prompt.greedy.length, vocab]);
      // Row t of the reference predicts token t + 1: the prompt's rows are 0..P-1, and generated token k
      // was chosen by row P - 1 + k.
      expect(worstRowError(context.data, ref.data, 0, vocab)).toBeLessThan(1e-4);
      expect(worstRowError(generation.data, ref.data, promptLength - 1, vocab)).toBeLessThan(1e-4);
    });
  });
}
