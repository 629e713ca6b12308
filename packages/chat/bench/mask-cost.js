// The masking cost of constrained decoding, as packages/chat/test/mask-cost.timing.test.ts measures it,
// runnable alone on a quiet machine: `node packages/chat/bench/mask-cost.js [vocab] [batch]` after
// `npm run build:ts`. 16 requests share one compiled JSON schema; each step computes every request's
// mask and accepts a token drawn uniformly among the allowed ones.
const { readFileSync } = require('node:fs');
const path = require('node:path');
const { grammarVocabularyOf, GuidedDecoding, validateResponseFormat } = require('../dist/index.js');

const VOCAB = Number(process.argv[2] ?? 32000);
const BATCH = Number(process.argv[3] ?? 16);
const STEPS = 120;

function random(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function main() {
  const json = JSON.parse(readFileSync(path.join(__dirname, '../../scribe-7m/model/tokenizer.json'), 'utf8'));
  const base = Object.keys(json.model.vocab);
  const next = random(1);
  const seen = new Set(base);
  const vocab = { ...json.model.vocab };
  for (let id = base.length; id < VOCAB; ) {
    const token = base[1 + Math.floor(next() * (base.length - 1))] + base[1 + Math.floor(next() * (base.length - 1))].replace(/^Ġ/, '');
    if (seen.has(token)) continue;
    seen.add(token);
    vocab[token] = id++;
  }
  let t0 = performance.now();
  const guided = await GuidedDecoding.create(grammarVocabularyOf({ ...json, model: { ...json.model, vocab } }, VOCAB), VOCAB, [0]);
  const setupMs = performance.now() - t0;
  const schema = {
    type: 'object',
    properties: {
      name: { type: 'string', maxLength: 24 },
      age: { type: 'integer', minimum: 0, maximum: 120 },
      tags: { type: 'array', items: { enum: ['red', 'green', 'blue'] }, minItems: 1, maxItems: 3 },
      address: { type: 'object', properties: { city: { type: 'string', maxLength: 20 }, zip: { type: 'string', pattern: '^[0-9]{5}$' } }, required: ['city', 'zip'] },
    },
    required: ['name', 'age', 'tags', 'address'],
  };
  t0 = performance.now();
  const compiled = await guided.compile(validateResponseFormat({ type: 'json_schema', schema }));
  const compileMs = performance.now() - t0;
  const sources = Array.from({ length: BATCH }, () => compiled.maskSource());
  const outputs = sources.map(() => []);
  const done = new Array(BATCH).fill(false);
  let tokens = 0;
  let elapsed = 0;
  for (let step = 0; step < STEPS && done.includes(false); step++) {
    for (let b = 0; b < BATCH; b++) {
      if (done[b]) continue;
      const start = performance.now();
      const mask = await sources[b].nextMask(outputs[b]);
      elapsed += performance.now() - start;
      tokens++;
      const allowed = [];
      for (let w = 0; w < mask.length; w++) for (let bits = mask[w]; bits !== 0; bits &= bits - 1) allowed.push(w * 32 + (31 - Math.clz32(bits & -bits)));
      const token = allowed[Math.floor(next() * allowed.length)];
      if (token === 0) done[b] = true;
      else outputs[b].push(token);
    }
  }
  console.log(JSON.stringify({ vocab: VOCAB, batch: BATCH, tokens, setupMs: Math.round(setupMs), compileMs: Math.round(compileMs), msPerToken: +(elapsed / tokens).toFixed(3), msPerStep: +((elapsed / tokens) * BATCH).toFixed(2), loadAverage: +require('node:os').loadavg()[0].toFixed(2) }));
  for (const source of sources) source.dispose();
  compiled.dispose();
  guided.dispose();
}
main();
