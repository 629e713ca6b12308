// The masking cost of constrained decoding, issue 14's bar: under 0.5 ms per token at a 32k vocabulary
// and batch 16. Runs in `npm test`'s timing phase (alone): 16 requests share one compiled JSON schema;
// each step computes every request's mask and accepts a token drawn uniformly among the allowed ones,
// as the executor's mask round trip does. The vocabulary is scribe-7m's 4,096 byte-level tokens
// extended to 32,000 with merges of two of them. bench/mask-cost.js is the same measurement as a script.
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { scribe7mPath } from '@kiln/scribe-7m';
import { grammarVocabularyOf, GuidedDecoding, validateResponseFormat } from '@kiln/chat';

const VOCAB = 32000;
const BATCH = 16;
const STEPS = 120;

function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

it(`masks cost under 0.5 ms per token at ${VOCAB} tokens and batch ${BATCH}`, async () => {
  const json = JSON.parse(readFileSync(join(scribe7mPath, 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number> } };
  const base = Object.keys(json.model.vocab);
  const next = random(1);
  const seen = new Set(base);
  const vocab: Record<string, number> = { ...json.model.vocab };
  for (let id = base.length; id < VOCAB; ) {
    const token = base[1 + Math.floor(next() * (base.length - 1))] + base[1 + Math.floor(next() * (base.length - 1))].replace(/^Ġ/, '');
    if (seen.has(token)) continue;
    seen.add(token);
    vocab[token] = id++;
  }
  const guided = await GuidedDecoding.create(grammarVocabularyOf({ ...json, model: { ...json.model, vocab } }, VOCAB), VOCAB, [0]);
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
  const compiled = await guided.compile(validateResponseFormat({ type: 'json_schema', schema }));
  const sources = Array.from({ length: BATCH }, () => compiled!.maskSource());
  const outputs: number[][] = sources.map(() => []);
  const done = new Array<boolean>(BATCH).fill(false);
  let tokens = 0;
  let elapsed = 0;
  for (let step = 0; step < STEPS && done.includes(false); step++) {
    for (let b = 0; b < BATCH; b++) {
      if (done[b]) continue;
      const start = performance.now();
      const mask = await sources[b].nextMask(outputs[b]);
      elapsed += performance.now() - start;
      tokens++;
      const allowed: number[] = [];
      for (let w = 0; w < mask.length; w++) for (let bits = mask[w]; bits !== 0; bits &= bits - 1) allowed.push(w * 32 + (31 - Math.clz32(bits & -bits)));
      const token = allowed[Math.floor(next() * allowed.length)];
      if (token === 0) done[b] = true;
      else outputs[b].push(token);
    }
  }
  const perToken = elapsed / tokens;
  console.log(`masking: ${perToken.toFixed(3)} ms per token over ${tokens} tokens (${VOCAB} tokens, batch ${BATCH}); ${(perToken * BATCH).toFixed(2)} ms per step; load average ${loadavg()[0].toFixed(2)}`);
  for (const source of sources) source.dispose();
  compiled!.dispose();
  guided.dispose();
  expect(tokens).toBeGreaterThan(1000);
  expect(perToken).toBeLessThan(0.5);
}, 300000);
