// The in-flight batching executor on CUDA engines (float32, built with `kiln build --target cuda`) of
// the llama fixture and scribe-7m, as the CPU executor tests (packages/runtime/test) check it:
// - 32 concurrent greedy requests of different prompt lengths give exactly the tokens each gives alone;
// - beam search (4 beams, 8 tokens) equals transformers' beam_search, scores within 1e-4;
// - cancelled requests give back every KV block;
// - more requests than the KV cache holds complete, with the tokens they give alone, under both
//   capacity scheduler policies;
// - sampling: top-k and top-p draws pass a chi-square test against @kiln/sampling's reference
//   distribution of the engine's own logits; seeded sampling is batch-invariant.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { convertAndBuild, fixturesDir, makeTmpDir, mapLimit, onCuda, prompts, requirePackage, rng, scribeDir, target } from './helpers.mjs';

const { Engine } = requirePackage('@kiln/runtime');
const { referenceDistribution } = requirePackage('@kiln/sampling');

const llamaFixture = path.join(fixturesDir, 'llama');
const reference = JSON.parse(fs.readFileSync(path.join(llamaFixture, 'reference.json'), 'utf8'));
const work = makeTmpDir('executor');
let llamaDir;
let scribeEngineDir;

before(async () => {
  [llamaDir, scribeEngineDir] = await Promise.all([
    convertAndBuild({ workDir: work.dir, modelDir: llamaFixture, name: 'llama', buildFlags: ['--max-batch-size', '32', '--max-seq-len', '256', '--max-beam-width', '4'] }),
    convertAndBuild({ workDir: work.dir, modelDir: scribeDir, name: 'scribe-7m', buildFlags: ['--max-batch-size', '32', '--max-seq-len', '512'] }),
  ]);
});
after(() => work.remove());

async function withEngine(dir, options, body) {
  const engine = await Engine.load(dir, { numThreads: 2, ...options });
  try {
    if (onCuda) assert.equal(engine.info.backend, 'cuda');
    return await body(engine);
  } finally {
    await engine.executor.shutdown();
    await engine.dispose();
  }
}

/** Each request alone, one after the other. */
async function alone(engine, requests) {
  const results = [];
  for (const request of requests) results.push(await engine.executor.generate(request));
  return results;
}

/** Largest |a − b| of a row relative to the row's largest |b|, over all rows. */
function maxRelativeError(actual, expected, vocab) {
  let worst = 0;
  for (let row = 0; row * vocab < expected.length; row++) {
    let difference = 0;
    let scale = 0;
    for (let i = row * vocab; i < (row + 1) * vocab; i++) {
      difference = Math.max(difference, Math.abs(actual[i] - expected[i]));
      scale = Math.max(scale, Math.abs(expected[i]));
    }
    worst = Math.max(worst, difference / scale);
  }
  return worst;
}

function assertAllBlocksFree(engine) {
  const stats = engine.executor.stats();
  assert.equal(stats.kvBlocksUsed, 0, 'no KV block is still referenced');
  assert.equal(stats.kvBlocksFree, stats.kvBlocksTotal, 'every KV block is free');
}

describe(`executor on ${target} engines`, () => {
  for (const [name, dir, vocab] of [['llama fixture', () => llamaDir, 512], ['scribe-7m', () => scribeEngineDir, 4096]]) {
    it(`${name}: 32 concurrent greedy requests give the tokens each gives alone`, async () => {
      await withEngine(dir(), {}, async (engine) => {
        const requests = prompts(7, 32, vocab, 1, 48).map((inputIds, index) => ({
          inputIds,
          maxTokens: 4 + (index % 9),
          ignoreEos: true,
          returnGenerationLogits: true,
        }));
        const expected = await alone(engine, requests);
        const peak = [];
        const unsubscribe = engine.executor.onIteration((stats) => peak.push(stats.activeRequests));
        const together = await Promise.all(requests.map((request) => engine.executor.generate(request)));
        unsubscribe();
        assert.ok(Math.max(...peak) > 16, `they ran together (peak ${Math.max(...peak)} active)`);
        together.forEach((result, index) => {
          assert.deepEqual(result.outputIds, expected[index].outputIds, `request ${index} (prompt of ${requests[index].inputIds.length})`);
          assert.equal(result.finishReason, 'length');
          const error = maxRelativeError(result.generationLogits, expected[index].generationLogits, vocab);
          assert.ok(error < 1e-4, `request ${index}: generation logits differ by ${error}`);
        });
        assertAllBlocksFree(engine);
      });
    });
  }

  it("beam search: transformers' 4 beams of 8 tokens, scores within 1e-4", async () => {
    await withEngine(llamaDir, {}, async (engine) => {
      const b = reference.beam_search;
      assert.equal(b.num_beams, 4);
      const result = await engine.executor.generate({
        inputIds: reference.prompts[b.prompt_index].input_ids,
        maxTokens: b.max_new_tokens,
        ignoreEos: true,
        beamWidth: b.num_beams,
        numReturnSequences: b.num_beams,
        lengthPenalty: b.length_penalty,
        earlyStopping: false,
      });
      const sequences = result.sequences ?? [];
      assert.deepEqual(sequences.map((s) => s.outputIds), b.sequences);
      sequences.forEach((s, i) => assert.ok(Math.abs(s.score - b.sequence_scores[i]) < 1e-4, `beam ${i}: score ${s.score} vs ${b.sequence_scores[i]}`));
      assert.deepEqual(result.outputIds, b.sequences[0]);
      assertAllBlocksFree(engine);
    });
  });

  it('a cancelled request gives back all its KV blocks; so does a mixed run', async () => {
    await withEngine(llamaDir, {}, async (engine) => {
      const total = engine.executor.stats().kvBlocksTotal;
      assert.ok(total > 0);
      const controller = new AbortController();
      let count = 0;
      let last;
      let usedWhileRunning = 0;
      for await (const event of engine.executor.stream({ inputIds: reference.prompts[2].input_ids, maxTokens: 200, ignoreEos: true }, { signal: controller.signal })) {
        count += event.outputIds.length;
        if (count >= 5 && !controller.signal.aborted) {
          usedWhileRunning = engine.executor.stats().kvBlocksUsed;
          controller.abort();
        }
        last = event.finishReason;
      }
      assert.equal(last, 'cancelled');
      assert.ok(count < 200, `stopped early (${count} tokens)`);
      assert.ok(usedWhileRunning > 0, 'it held blocks while running');
      assertAllBlocksFree(engine);

      // Cancel by id, right after enqueueing, and some streams mid-way while others finish.
      const id = engine.executor.enqueue({ inputIds: [5, 6, 7], maxTokens: 100, ignoreEos: true });
      engine.executor.cancel(id);
      const random = rng(23);
      const finishes = await Promise.all(
        prompts(29, 12, 512, 5, 60).map(async (inputIds, index) => {
          const abort = new AbortController();
          const cancelled = index % 2 === 0;
          const cancelAfter = cancelled ? 1 + Math.floor(random() * 20) : Infinity;
          // Room to spare (190 tokens, within maxSeqLen 256) so that a fast device cannot finish a request
          // before its abort lands; the others stop at 40.
          const maxTokens = cancelled ? 190 : 40;
          let n = 0;
          let finish;
          for await (const event of engine.executor.stream({ inputIds, maxTokens, ignoreEos: true }, { signal: abort.signal })) {
            n += event.outputIds.length;
            if (n >= cancelAfter) abort.abort();
            finish = event.finishReason;
          }
          return finish;
        }),
      );
      assert.ok(finishes.includes('cancelled') && finishes.includes('length'), JSON.stringify(finishes));
      assert.equal(engine.executor.stats().kvBlocksTotal, total);
      assertAllBlocksFree(engine);
    });
  });

  for (const policy of ['guaranteedNoEvict', 'maxUtilization']) {
    it(`more requests than the KV cache holds (kvCacheTokens 80), ${policy}: same greedy tokens`, async () => {
      const requests = prompts(19, 6, 512, 18, 30).map((inputIds) => ({ inputIds, maxTokens: 24, ignoreEos: true }));
      const expected = await withEngine(llamaDir, { enableBlockReuse: false }, (engine) => alone(engine, requests));
      // 5 blocks of 16: one request needs up to 4 blocks in all, 2 for its prompt.
      await withEngine(llamaDir, { kvCacheTokens: 80, capacitySchedulerPolicy: policy, enableBlockReuse: false }, async (engine) => {
        assert.equal(engine.executor.stats().kvBlocksTotal, 5);
        let preempted = 0;
        let maxActive = 0;
        engine.executor.onIteration((stats) => {
          preempted += stats.preempted;
          maxActive = Math.max(maxActive, stats.activeRequests);
        });
        const together = await Promise.all(requests.map((request) => engine.executor.generate(request)));
        together.forEach((result, index) => {
          assert.equal(result.finishReason, 'length');
          assert.deepEqual(result.outputIds, expected[index].outputIds, `request ${index}`);
        });
        if (policy === 'guaranteedNoEvict') {
          assert.equal(preempted, 0);
          assert.equal(maxActive, 1);
        } else {
          assert.ok(preempted > 0, 'maxUtilization preempted');
        }
        assertAllBlocksFree(engine);
      });
    });
  }
});

// ---------------------------------------------------------------------------------------------------
// Sampling statistics (native/test/sampling.test.ts's chi-square, on the engine's sampled tokens).

function logGamma(x) {
  // Lanczos approximation (g = 7, n = 9).
  const c = [0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
    12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7];
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  x -= 1;
  let a = c[0];
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += c[i] / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

/** Q(a, x): the series for x < a + 1, else Lentz's continued fraction (Numerical Recipes 6.2). */
function upperRegularizedGamma(a, x) {
  if (x <= 0) return 1;
  const front = Math.exp(-x + a * Math.log(x) - logGamma(a));
  if (x < a + 1) {
    let term = 1 / a;
    let sum = term;
    for (let n = 1; n < 1000 && Math.abs(term) > Math.abs(sum) * 1e-15; n++) sum += term *= x / (a + n);
    return 1 - sum * front;
  }
  const tiny = 1e-300;
  let b = x + 1 - a;
  let c = 1 / tiny;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < 1000; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (Math.abs(d) < tiny) d = tiny;
    c = b + an / c;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const delta = d * c;
    h *= delta;
    if (Math.abs(delta - 1) < 1e-15) break;
  }
  return front * h;
}

/** p-value of Pearson's chi-square of counts against probabilities (bins under 5 expected pooled). */
function chiSquarePValue(counts, probs, draws) {
  let statistic = 0;
  let bins = 0;
  let pooledObserved = 0;
  let pooledExpected = 0;
  for (let i = 0; i < probs.length; i++) {
    const expected = probs[i] * draws;
    if (expected === 0) continue;
    if (expected < 5) {
      pooledObserved += counts[i];
      pooledExpected += expected;
      continue;
    }
    statistic += (counts[i] - expected) ** 2 / expected;
    bins++;
  }
  if (pooledExpected > 0) {
    statistic += (pooledObserved - pooledExpected) ** 2 / pooledExpected;
    bins++;
  }
  const df = bins - 1;
  return { statistic, df, p: upperRegularizedGamma(df / 2, statistic / 2) };
}

describe(`sampling on ${target} engines`, () => {
  const DRAWS = 4000;
  const inputIds = reference.prompts[1].input_ids;

  it('chi-square helper matches known quantiles', () => {
    // chi2.sf(3.841458820694124, 1) = 0.05; chi2.sf(18.307038053275146, 10) = 0.05; chi2.sf(2, 2) = e^-1.
    assert.ok(Math.abs(upperRegularizedGamma(0.5, 3.841458820694124 / 2) - 0.05) < 1e-10);
    assert.ok(Math.abs(upperRegularizedGamma(5, 18.307038053275146 / 2) - 0.05) < 1e-10);
    assert.ok(Math.abs(upperRegularizedGamma(1, 1) - Math.exp(-1)) < 1e-12);
  });

  /** The first sampled token of DRAWS requests with seeds 1..DRAWS, counted. */
  async function draw(engine, config) {
    const counts = new Float64Array(engine.vocabSize);
    const seeds = Array.from({ length: DRAWS }, (_, i) => i + 1);
    await mapLimit(seeds, 64, async (seed) => {
      const result = await engine.executor.generate({ inputIds, maxTokens: 1, ignoreEos: true, ...config, seed });
      counts[result.outputIds[0]]++;
    });
    return counts;
  }

  for (const [name, config] of [
    ['top-k 8, temperature 1.3', { temperature: 1.3, topK: 8 }],
    ['top-p 0.9, temperature 1.5', { temperature: 1.5, topP: 0.9 }],
    ['top-k 30, top-p 0.95, temperature 2', { temperature: 2, topK: 30, topP: 0.95 }],
  ]) {
    it(`${name}: no masked token drawn, frequencies pass chi-square at p > 0.001`, async () => {
      await withEngine(llamaDir, {}, async (engine) => {
        const greedy = await engine.executor.generate({ inputIds, maxTokens: 1, ignoreEos: true, returnGenerationLogits: true });
        const logits = greedy.generationLogits.subarray(0, engine.vocabSize);
        const expected = referenceDistribution(logits, inputIds, config);
        const counts = await draw(engine, config);
        counts.forEach((n, token) => assert.ok(n === 0 || expected[token] > 0, `drew masked token ${token} ${n} times`));
        const { p, df } = chiSquarePValue(counts, expected, DRAWS);
        assert.ok(df > 0, 'more than one bin');
        assert.ok(p > 0.001, `chi-square p = ${p} (df ${df})`);
        // The test has power: the same draws fail against the distribution at another temperature.
        const other = referenceDistribution(logits, inputIds, { ...config, temperature: config.temperature * 0.5 });
        const wrong = chiSquarePValue(counts, other, DRAWS);
        process.stdout.write(`# ${name}: chi-square p = ${p.toFixed(4)} (df ${df}); against temperature ${config.temperature * 0.5}: p = ${wrong.p.toExponential(2)}\n`);
        assert.ok(wrong.p < 1e-6, `draws also fit temperature ${config.temperature * 0.5} (p = ${wrong.p})`);
      });
    });
  }

  // The cuda backend samples on the device (kernels/sampling.cu); KILN_CUDA_SAMPLING=host makes the
  // executor sample on the host from copied logits, with the CPU sampler. Each request runs alone, so
  // both runs see the same logits; the draws must be the same tokens, with the same logprobs.
  for (const [name, dir, vocab] of [['llama fixture', () => llamaDir, 512], ['scribe-7m', () => scribeEngineDir, 4096]]) {
    it(`${name}: device sampling draws what the host sampler draws, with every control`, async () => {
      const even = new Uint32Array(Math.ceil(vocab / 32)).fill(0x55555555);
      const evenTokens = () => ({ nextMask: async () => even, beamMasks: async (beams) => beams.map(() => even), dispose() {} });
      const prompt = (i) => reference.prompts[i % 3].input_ids.map((id) => id % vocab);
      const controls = [
        { temperature: 0, logprobs: 5 },
        { temperature: 1, logprobs: 3 },
        { temperature: 0.7, topK: 5 },
        { temperature: 1.3, topP: 0.9 },
        { temperature: 1.1, minP: 0.05 },
        { temperature: 2, topK: 40, topP: 0.95, minP: 0.01, logprobs: 4 },
        { temperature: 1, repetitionPenalty: 1.3, presencePenalty: 0.5, frequencyPenalty: 0.4 },
        { temperature: 0.9, noRepeatNgramSize: 2, minTokens: 6, endId: 3, topP: 0.8 },
        { temperature: 1, badWords: [[5], [7, 9], [11]], embeddingBias: { 13: 4, 17: -Infinity, 19: 2.5 } },
        { temperature: 0, repetitionPenalty: 1.5, embeddingBias: { 21: 3 } },
        { temperature: 1.2, topK: 1 },
        { temperature: 0.8, topP: 0.3, logprobs: 20 },
      ];
      const requests = [];
      controls.forEach((config, i) => {
        for (const seed of [7, 1000 + i]) requests.push({ inputIds: prompt(i), maxTokens: 12, ignoreEos: config.endId === undefined, ...config, seed });
      });
      requests.push({ inputIds: prompt(1), maxTokens: 10, ignoreEos: true, temperature: 1, seed: 5, tokenMask: evenTokens() });
      requests.push({ inputIds: prompt(2), maxTokens: 10, ignoreEos: true, temperature: 0, logprobs: 2, tokenMask: evenTokens() });
      async function run(mode) {
        const saved = process.env.KILN_CUDA_SAMPLING;
        process.env.KILN_CUDA_SAMPLING = mode;
        try {
          return await withEngine(dir(), {}, (engine) => alone(engine, requests.map((r) => (r.tokenMask ? { ...r, tokenMask: evenTokens() } : r))));
        } finally {
          if (saved === undefined) delete process.env.KILN_CUDA_SAMPLING;
          else process.env.KILN_CUDA_SAMPLING = saved;
        }
      }
      const host = await run('host');
      const device = await run('device');
      let logprobs = 0;
      let worst = 0;
      requests.forEach((request, i) => {
        const { tokenMask, ...shown } = request;
        const what = `request ${i} ${JSON.stringify(shown)}${tokenMask ? ' with a token mask' : ''}`;
        assert.deepEqual(device[i].outputIds, host[i].outputIds, what);
        if (tokenMask) device[i].outputIds.forEach((id) => assert.equal(id % 2, 0, `${what}: drew masked token ${id}`));
        assert.equal(device[i].logprobs === undefined, host[i].logprobs === undefined, what);
        (host[i].logprobs ?? []).forEach((h, k) => {
          const d = device[i].logprobs[k];
          const difference = (a, b) => (a === b ? 0 : Math.abs(a - b));  // equal infinities differ by 0
          worst = Math.max(worst, difference(d.logprob, h.logprob));
          assert.deepEqual(d.top.map((t) => t.token), h.top.map((t) => t.token), `${what}: top tokens of step ${k}`);
          d.top.forEach((t, j) => (worst = Math.max(worst, difference(t.logprob, h.top[j].logprob))));
          logprobs++;
        });
      });
      assert.ok(worst <= 1e-5, `worst logprob difference ${worst}`);
      process.stdout.write(`# ${name}: ${requests.length} requests, device and host draws equal; ${logprobs} logprob steps, worst difference ${worst.toExponential(2)}\n`);
    });
  }

  it('a seeded sampled request gives the same tokens alone and batched with others', async () => {
    await withEngine(llamaDir, {}, async (engine) => {
      const request = { inputIds: reference.prompts[2].input_ids, maxTokens: 16, ignoreEos: true, temperature: 1.3, topP: 0.95, seed: 1234 };
      const single = await engine.executor.generate(request);
      const noise = Array.from({ length: 6 }, (_, i) =>
        engine.executor.generate({ inputIds: reference.prompts[i % 3].input_ids.slice(0, 3 + i), maxTokens: 5 + i, ignoreEos: true, temperature: 0.5 + i * 0.2, topK: 20 }),
      );
      const [batched] = await Promise.all([engine.executor.generate(request), ...noise]);
      assert.deepEqual(batched.outputIds, single.outputIds);
    });
  });
});
