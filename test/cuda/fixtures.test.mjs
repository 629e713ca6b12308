// Accuracy of CUDA engines against transformers, end to end through the `kiln` command: every hf-tiny
// fixture converted once (float32) and built twice, `--target cuda --dtype float32` and `--dtype
// bfloat16`, each run on the fixture's 3 prompts with `kiln generate --json --logits-out`:
// - float32: the 16 greedy tokens exactly, and every context and generation logits row within 1e-4
//   relative (‖out − ref‖ / ‖ref‖) of transformers' teacher-forced logits;
// - bfloat16: every comparable row within 3e-2, and the greedy tokens equal up to the first position
//   whose reference top-1/top-2 margin is below 0.1 (a near tie may then break either way).
// scribe-7m (float32 engine): its 4 reference continuations of 24 tokens, token for token.
// The per-fixture table goes to $KILN_RESULTS_DIR/accuracy-<target>.md (and .json) and to stdout.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import {
  compareUpToMargin,
  convertAndBuild,
  describeMachine,
  fixturesDir,
  fmt,
  jobs,
  kilnOk,
  makeTmpDir,
  mapLimit,
  markdownTable,
  readSafetensors,
  scribeDir,
  target,
  topMargin,
  worstRowError,
  writeResult,
} from './helpers.mjs';

const FLOAT32_TOLERANCE = 1e-4;
const BFLOAT16_TOLERANCE = 3e-2;
const BFLOAT16_MIN_MARGIN = 0.1;
const BUILD_FLAGS = ['--gather-context-logits', '--max-batch-size', '2', '--max-seq-len', '64'];
// Known departures from the bfloat16 bar, run and reported (node:test "todo": a failure does not fail the
// run). Mixtral: with bfloat16 weights one token's top-2 expert choice flips (prompt 1, last prompt row,
// 0.36 relative error), a discrete change no tolerance covers. It happens on the cpu with float32
// activations too, and with the router kept in float32 as well (tried): the flip comes from the
// bfloat16 rounding of the layers before the router, as it would in transformers run in bfloat16.
const BFLOAT16_TODO = {
  mixtral: 'bfloat16 weights flip a top-2 expert choice (prompt 1, last row; on cpu too, router in float32 too)',
};

const fixtures = fs
  .readdirSync(fixturesDir)
  .filter((name) => fs.existsSync(path.join(fixturesDir, name, 'reference.json')))
  .sort();
// KILN_SUITE_FIXTURES=llama,gpt2 runs only those (quick checks); default: all of them.
const only = process.env.KILN_SUITE_FIXTURES ? new Set(process.env.KILN_SUITE_FIXTURES.split(',')) : undefined;

const work = makeTmpDir('fixtures');
const results = [];

after(() => {
  results.sort((a, b) => a.fixture.localeCompare(b.fixture) || a.dtype.localeCompare(b.dtype));
  const table = markdownTable(
    ['fixture', 'dtype', 'context rel. err (worst row)', 'generation rel. err (worst row)', 'greedy tokens', 'result'],
    results.map((r) => [
      r.fixture,
      r.dtype,
      fmt(r.contextError),
      fmt(r.generationError),
      r.tokens,
      (r.error ? `FAIL: ${r.error}` : r.pass ? 'pass' : 'FAIL') + (r.todo ? ` (known: ${r.todo})` : ''),
    ]),
  );
  const text =
    `# Kiln ${target} engines against transformers\n\n${describeMachine()}\n\n` +
    `float32: tokens exact, rows <= ${FLOAT32_TOLERANCE}; bfloat16: rows <= ${BFLOAT16_TOLERANCE}, tokens up to a ` +
    `reference top-1/top-2 margin < ${BFLOAT16_MIN_MARGIN} ("n/16 to margin" = compared n, then stopped at a near tie).\n\n${table}`;
  const file = writeResult(`accuracy-${target}.md`, text);
  writeResult(`accuracy-${target}.json`, `${JSON.stringify(results, null, 2)}\n`);
  process.stdout.write(`\n${text}\nwritten to ${file}\n`);
  work.remove();
});

/** Runs one prompt through `kiln generate` and reads back its tokens and logits. */
async function generate(engineDir, name, inputIds, maxTokens) {
  const logitsFile = path.join(work.dir, `${name}.safetensors`);
  const run = await kilnOk([
    'generate',
    '--engine', engineDir,
    '--input-ids', inputIds.join(','),
    '--max-tokens', String(maxTokens),
    '--ignore-eos',
    '--json',
    '--logits-out', logitsFile,
  ]);
  const lines = run.stdout.trimEnd().split('\n');
  const result = JSON.parse(lines[lines.length - 1]);
  const tensors = readSafetensors(logitsFile);
  return { outputIds: result.outputIds, finishReason: result.finishReason, context: tensors.get('context_logits'), generation: tensors.get('generation_logits') };
}

/**
 * Compares one run with a reference prompt (input_ids, greedy, logits rows [P + n, vocab]) and returns
 * the measurements and the list of failures (empty when it passes).
 */
function compare(out, prompt, refLogits, dtype) {
  const vocab = prompt.logits_shape[1];
  const P = prompt.input_ids.length;
  const n = prompt.greedy.length;
  const failures = [];
  if (!out.context) failures.push('no context_logits in the logits file');
  if (!out.generation) failures.push('no generation_logits in the logits file');
  if (failures.length) return { failures, contextError: NaN, generationError: NaN, tokens: '-' };
  if (out.finishReason !== 'length') failures.push(`finishReason ${out.finishReason}`);
  assert.deepEqual(out.context.shape, [P, vocab], 'context_logits shape');
  assert.equal(out.generation.shape[1], vocab, 'generation_logits columns');
  assert.equal(out.generation.shape[0], out.outputIds.length, 'one generation row per output token');

  // Row t of the reference predicts token t + 1: context rows are 0..P-1, generated token k was chosen by row P-1+k.
  const contextError = worstRowError(out.context.data, refLogits, 0, vocab);
  let tokens;
  let comparableRows;
  if (dtype === 'float32') {
    const equal = out.outputIds.length === n && out.outputIds.every((id, k) => id === prompt.greedy[k]);
    const first = out.outputIds.findIndex((id, k) => id !== prompt.greedy[k]);
    tokens = equal ? `${n}/${n}` : `differ at ${first < 0 ? out.outputIds.length : first}`;
    if (!equal) failures.push(`greedy tokens ${JSON.stringify(out.outputIds)} != reference ${JSON.stringify(prompt.greedy)}`);
    comparableRows = equal ? n : Math.max(0, first) + 1;
  } else {
    const c = compareUpToMargin(out.outputIds, prompt.greedy, (k) => topMargin(refLogits, P - 1 + k, vocab), BFLOAT16_MIN_MARGIN);
    tokens = c.stoppedAt >= 0 ? `${c.compared}/${n} to margin` : `${c.compared}/${n}`;
    if (c.mismatchAt >= 0) {
      failures.push(`greedy token ${c.mismatchAt} is ${out.outputIds[c.mismatchAt]}, reference ${prompt.greedy[c.mismatchAt]} (margin ${topMargin(refLogits, P - 1 + c.mismatchAt, vocab).toFixed(3)})`);
    }
    // A generation row is comparable while every earlier token equals the reference's.
    let firstDiff = out.outputIds.findIndex((id, k) => id !== prompt.greedy[k]);
    if (firstDiff < 0) firstDiff = out.outputIds.length;
    comparableRows = Math.min(firstDiff + 1, out.outputIds.length, n);
  }
  const generationError = worstRowError(out.generation.data, refLogits, P - 1, vocab, comparableRows);
  const tolerance = dtype === 'float32' ? FLOAT32_TOLERANCE : BFLOAT16_TOLERANCE;
  if (!(contextError <= tolerance)) failures.push(`context logits: worst row error ${fmt(contextError)} > ${tolerance}`);
  if (!(generationError <= tolerance)) failures.push(`generation logits: worst row error ${fmt(generationError)} > ${tolerance}`);
  return { failures, contextError, generationError, tokens };
}

/** Runs every prompt of a model's reference on one engine, records one table row, then asserts. */
async function checkEngine({ fixture, dtype, modelDir, engine, maxTokens, todo }) {
  const reference = JSON.parse(fs.readFileSync(path.join(modelDir, 'reference.json'), 'utf8'));
  const refTensors = readSafetensors(path.join(modelDir, 'reference.safetensors'));
  const row = { fixture, dtype, contextError: NaN, generationError: NaN, tokens: '-', pass: false, failures: [], todo };
  results.push(row);
  try {
    const engineDir = await engine;
    const runs = await mapLimit(reference.prompts, 3, (prompt, index) =>
      generate(engineDir, `${fixture}-${dtype}-${index}`, prompt.input_ids, maxTokens ?? prompt.greedy.length),
    );
    const compared = runs.map((out, index) => {
      const prompt = reference.prompts[index];
      return compare(out, prompt, refTensors.get(prompt.logits_tensor).data, dtype);
    });
    row.contextError = Math.max(...compared.map((c) => c.contextError));
    row.generationError = Math.max(...compared.map((c) => c.generationError));
    row.tokens = compared.map((c) => c.tokens).join(', ');
    row.failures = compared.flatMap((c, index) => c.failures.map((f) => `prompt ${index}: ${f}`));
    row.pass = row.failures.length === 0;
  } catch (error) {
    row.error = String(error.message ?? error).split('\n').find((line) => line.trim()) ?? 'error';
    throw error;
  }
  assert.deepEqual(row.failures, [], `${fixture} ${dtype} on ${target}`);
}

describe(`hf-tiny fixtures on ${target} engines`, { concurrency: jobs }, () => {
  assert.equal(fixtures.length, 20, `fixtures/hf-tiny should hold 20 fixtures, found ${fixtures.join(', ')}`);
  for (const fixture of fixtures.filter((name) => !only || only.has(name))) {
    it(fixture, async (t) => {
      const modelDir = path.join(fixturesDir, fixture);
      const checkpoints = new Map();
      const build = (dtype) => convertAndBuild({ workDir: work.dir, modelDir, name: fixture, dtype, buildFlags: BUILD_FLAGS, checkpoints });
      const float32 = build('float32');
      const bfloat16 = build('bfloat16'); // shares the float32 build's conversion on cuda
      // Keep an unawaited failure from being reported as unhandled: each subtest awaits its own.
      float32.catch(() => {});
      bfloat16.catch(() => {});
      await t.test('float32: greedy tokens exact, logits rows within 1e-4', () =>
        checkEngine({ fixture, dtype: 'float32', modelDir, engine: float32 }));
      await t.test('bfloat16: logits rows within 3e-2, tokens up to a near tie', { todo: BFLOAT16_TODO[fixture] }, () =>
        checkEngine({ fixture, dtype: 'bfloat16', modelDir, engine: bfloat16, todo: BFLOAT16_TODO[fixture] }));
    });
  }

  it('scribe-7m (float32): the 4 reference continuations of 24 tokens', { skip: only && !only.has('scribe-7m') && 'not in KILN_SUITE_FIXTURES' }, async () => {
    const engine = convertAndBuild({ workDir: work.dir, modelDir: scribeDir, name: 'scribe-7m', dtype: 'float32', buildFlags: BUILD_FLAGS });
    await checkEngine({ fixture: 'scribe-7m', dtype: 'float32', modelDir: scribeDir, engine, maxTokens: 24 });
  });
});
