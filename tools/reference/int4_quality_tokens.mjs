// Token ids for tools/reference/int4_quality_study.py, from Kiln's own tokenizer: the Book of Ruth (the
// evaluation text of packages/cli/test/quantization.test.ts), that test's four greedy prompts, and eight
// KJV-style calibration prompts (none from Ruth). Usage: node tools/reference/int4_quality_tokens.mjs DIR
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tokenizer } from '@kiln/runtime';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '../..');
const dir = process.argv[2];
await fs.mkdir(dir, { recursive: true });
const tokenizer = await Tokenizer.load(path.join(root, 'packages/scribe-7m/model'));
const ruth = tokenizer.encode(await fs.readFile(path.join(root, 'fixtures/text/ruth-kjv.txt'), 'utf8'));
await fs.writeFile(path.join(dir, 'ruth.json'), JSON.stringify(ruth[0] === 0 ? ruth.slice(1) : ruth));
const prompts = ['And the LORD said unto Moses,', 'In the beginning God', 'And it came to pass, when', 'Blessed are they that'];
await fs.writeFile(path.join(dir, 'prompts.json'), JSON.stringify(prompts.map((p) => tokenizer.encode(p))));
const calibration = ['And the LORD said unto Moses,', 'In the beginning God', 'And God said,', 'Blessed are they that',
  'The LORD is my shepherd;', 'And Jesus answered and said unto them,', 'Now the sons of Israel', 'Thus saith the LORD'];
const withBos = (ids) => (ids[0] === 0 ? ids : [0, ...ids]);
await fs.writeFile(path.join(dir, 'calibration-prompts.json'), JSON.stringify(calibration.map((p) => withBos(tokenizer.encode(p)))));
