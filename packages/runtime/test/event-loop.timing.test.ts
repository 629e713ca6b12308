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
    // A step run on the main thread would delay nearly every 5 ms tick by a step's time, so the 99th
    // percentile is the check; the maximum only has to rule out one whole generation blocking the loop
    // (~900 ms). A single 20 ms stall was seen once on a shared 2-core CI machine (hypervisor, not Kiln),
    // which a tighter maximum turned into a red run.
    const sorted = [...lags].sort((a, b) => a - b);
    const p99 = sorted[Math.floor(sorted.length * 0.99)];
    const max = sorted[sorted.length - 1];
    console.log(`event-loop lag over ${sorted.length} ticks: median ${sorted[sorted.length >> 1].toFixed(2)} ms, p99 ${p99.toFixed(2)} ms, max ${max.toFixed(2)} ms`);
    expect(sorted.length).toBeGreaterThan(20);
    expect(p99).toBeLessThan(10);
    expect(max).toBeLessThan(100);
  });
});
