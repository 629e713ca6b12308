// The CUDA backend's device sampler (native/src/kiln/backends/cuda/kernels/sampling.cu) against the CPU
// sampler (kiln/sampling), the reference of its semantics: the same rows of logits with the same
// controls, seeds and steps must give the same tokens, the same top-logprob ids and logprobs within
// 1e-5. The rows are made to find the edges: vocabularies of 32,000, 128,256 and 151,936 tokens,
// logits rounded to quarter steps so that scores tie at every threshold (top-k's k-th score, top-p's
// boundary, the argmax), masked (-inf) tokens, token masks, and every control together.
// With KILN_CUDA_SUITE_TARGET=cpu both sides run the CPU sampler (a check of the test itself).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { onCuda, requirePackage, rng } from './helpers.mjs';

const { testing } = requirePackage('@kiln/native').loadNative();
const device = onCuda ? 'cuda' : 'cpu';

/** Logits of `rows` rows: normal-ish scores, rounded to quarters (ties), some tokens masked. */
function makeLogits(random, rows, vocab, { spread = 3, masked = 0.01 } = {}) {
  const logits = new Float32Array(rows * vocab);
  for (let i = 0; i < logits.length; i++) {
    const score = (random() + random() + random() - 1.5) * spread * 2;
    logits[i] = random() < masked ? -Infinity : Math.round(score * 4) / 4;
  }
  return logits;
}

const controls = [
  { temperature: 0 },
  { temperature: 0, logprobs: 20 },
  { temperature: 1 },
  { temperature: 0.7, logprobs: 5 },
  { temperature: 1, topK: 1 },
  { temperature: 1.3, topK: 50 },
  { temperature: 1, topK: 7, logprobs: 10 },
  { temperature: 1, topP: 0.9 },
  { temperature: 0.5, topP: 0.5 },
  { temperature: 2, topP: 0.01 },
  { temperature: 1, minP: 0.1 },
  { temperature: 1.5, topK: 100, topP: 0.8, minP: 0.02, logprobs: 3 },
  { temperature: 1, repetitionPenalty: 1.4, presencePenalty: 0.3, frequencyPenalty: 0.7 },
  { temperature: 0.9, noRepeatNgramSize: 2, minTokens: 50, endId: 2 },
  { temperature: 1, badWords: [Int32Array.of(3), Int32Array.of(8, 9)], embeddingBias: { ids: Int32Array.of(4, 5, 4), values: Float32Array.of(2.5, -Infinity, 1.25) } },
  { temperature: 0, repetitionPenalty: 2, embeddingBias: { ids: Int32Array.of(11), values: Float32Array.of(30) }, logprobs: 2 },
];

function rowsFor(random, vocab, numRows) {
  return Array.from({ length: numRows }, (_, i) => {
    const params = { ...controls[i % controls.length], seed: 1 + Math.floor(random() * 1e9) };
    const tokens = Int32Array.from({ length: 40 }, (_, k) => (k % 5 === 0 ? 8 : Math.floor(random() * Math.min(vocab, 64))));
    const row = { tokens, numPromptTokens: 20, step: Math.floor(random() * 100), sequenceIndex: i % 3, params };
    if (i % 7 === 3) row.allowed = Uint32Array.from({ length: Math.ceil(vocab / 32) }, () => Math.floor(random() * 2 ** 32));
    return row;
  });
}

function compare(vocab, numRows, seed, options) {
  const random = rng(seed);
  const logits = makeLogits(random, numRows, vocab, options);
  const rows = rowsFor(random, vocab, numRows);
  const host = testing.sampleRows({ logits, vocab, rows, threads: 2 });
  const dev = testing.sampleRows({ logits, vocab, rows, device });
  const difference = (a, b) => (a === b || (Number.isNaN(a) && Number.isNaN(b)) ? 0 : Math.abs(a - b));
  let worst = 0;
  for (let r = 0; r < numRows; r++) {
    const what = `vocab ${vocab}, row ${r}: ${JSON.stringify(controls[r % controls.length])}${rows[r].allowed ? ' with a token mask' : ''}`;
    assert.equal(dev.tokens[r], host.tokens[r], what);
    worst = Math.max(worst, difference(dev.logprobs[r], host.logprobs[r]));
    assert.deepEqual([...dev.top[r].ids], [...host.top[r].ids], `${what}: top ids`);
    dev.top[r].logprobs.forEach((v, k) => (worst = Math.max(worst, difference(v, host.top[r].logprobs[k]))));
  }
  assert.ok(worst <= 1e-5, `worst logprob difference ${worst}`);
  return worst;
}

describe(`device sampling (${device}) against the CPU sampler`, () => {
  for (const vocab of [32000, 128256, 151936]) {
    it(`vocabulary ${vocab}: 64 rows x 4 batches, every control, tied and masked scores`, () => {
      let worst = 0;
      for (let batch = 0; batch < 4; batch++) worst = Math.max(worst, compare(vocab, 64, vocab + batch));
      process.stdout.write(`# vocab ${vocab}: 256 rows equal, worst logprob difference ${worst.toExponential(2)}\n`);
    });
  }
  it('peaked rows (one token holds most of the mass) and wide rows (spread 0.2)', () => {
    compare(32000, 64, 11, { spread: 12 });
    compare(32000, 64, 12, { spread: 0.2 });
  });
  it('a row whose every token is masked takes token 0, as on the CPU', () => {
    compare(512, 16, 13, { masked: 1 });
  });
  it('a small vocabulary (fewer tokens than threads)', () => {
    compare(100, 32, 14);
  });
});
