// Timing-sensitive: run alone (the `test:timing` target, after the parallel test phase), so that other
// test processes do not compete with this one for the 2 cores while the timer is measured.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { scribe7mPath } from '@kiln/scribe-7m';
import { makeEngine, prompts, withEngine } from './executor-helpers';

let tmpDir: string;
let scribeDir: string;

beforeAll(async () => {
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-event-loop-'));
  scribeDir = await makeEngine(tmpDir, scribe7mPath, 'scribe', undefined, { maxBatchSize: 32, maxSeqLen: 512 });
}, 300000);

afterAll(() => {
  fs.rmSync(tmpDir, { recursive: true, force: true });
});

test('the event loop stays responsive during a long generation', async () => {
  await withEngine(scribeDir, { numThreads: 1 }, async (engine) => {
    const lags: number[] = [];
    let expected = performance.now() + 5;
    const timer = setInterval(() => {
      const now = performance.now();
      lags.push(now - expected);
      expected = now + 5;
    }, 5);
    try {
      const requests = prompts(31, 8, 4096, 100, 200).map((inputIds) => engine.executor.generate({ inputIds, maxTokens: 150, ignoreEos: true }));
      await Promise.all(requests);
    } finally {
      clearInterval(timer);
    }
    expect(lags.length).toBeGreaterThan(20);
    expect(Math.max(...lags)).toBeLessThan(20);
  });
});
