// Per-op conformance of the CUDA kernels with the CPU kernels: small hand-built engines that use every
// op (and the attention variants of the model zoo) are written twice, for target cpu and target cuda,
// with the same weights, and the same requests (several sequences packed, prefill then decode steps,
// context and generation logits) run on both:
// - cuda float32 (float32 weights) against cpu: every logits row within 1e-5 relative, tokens equal;
// - cuda bfloat16 (bfloat16 weights and activations) against cpu with the same bfloat16 weights: rows
//   within 3e-2, tokens equal up to a near tie (cpu top-1/top-2 margin < 0.1); float16 likewise at 1e-2.
// With KILN_CUDA_SUITE_TARGET=cpu the "device" engine is a cpu engine run on the portable kernels
// (forceGeneric) against the default (AVX2 where available) ones.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { fmt, makeTmpDir, onCuda, requirePackage, target } from './helpers.mjs';
import { PROGRAMS, REQUESTS, TOLERANCE, compareRuns, denseProgram, runRequests } from './program.mjs';

const native = requirePackage('@kiln/native').loadNative();
const work = makeTmpDir('ops');
after(() => work.remove());

function computeCapability() {
  const devices = native.cudaInfo?.().devices ?? [];
  return devices[0]?.computeCapability ?? '9.0';
}

/** The target of the engine under test, and its load options. */
function deviceTarget(activationDType) {
  if (onCuda) return { target: { backend: 'cuda', computeCapability: computeCapability(), activationDType }, options: {} };
  return { target: { backend: 'cpu', isa: native.cpuInfo().isa }, options: { forceGeneric: true } };
}
const cpuTarget = () => ({ backend: 'cpu', isa: native.cpuInfo().isa });

const DTYPES = ['float32', 'bfloat16', 'float16'];

describe(`ops: ${target} kernels against the cpu kernels`, () => {
  PROGRAMS.forEach(([name, make], index) => {
    describe(name, () => {
      const built = make();
      const { program, vocabSize, logits, kvCache } = built;
      const requests = built.requests ?? REQUESTS;
      const engines = new Map();
      const load = (key, header, options) => {
        if (!engines.has(key)) {
          const engine = program.write(work.dir, `p${index}-${engines.size}`, header).then((file) => native.loadEngine(file, { numThreads: 2, ...options }));
          engine.catch(() => {}); // awaited (and reported) by the test that asked for it
          engines.set(key, engine);
        }
        return engines.get(key);
      };
      const cpu = (dtype, options = {}) =>
        load(`cpu-${dtype}-${JSON.stringify(options)}`, program.header({ target: cpuTarget(), weightDType: dtype, vocabSize, logits, kvCache }), options);
      const device = (dtype, options = {}) => {
        const t = deviceTarget(dtype);
        return load(`dev-${dtype}-${JSON.stringify(options)}`, program.header({ target: t.target, weightDType: dtype, vocabSize, logits, kvCache }), { ...t.options, ...options });
      };
      after(async () => {
        for (const engine of engines.values()) {
          try {
            await (await engine).dispose();
          } catch {
            // a load that failed was reported by its test
          }
        }
      });

      for (const dtype of DTYPES) {
        it(`${dtype}: context and generation logits within ${TOLERANCE[dtype]}, greedy tokens equal`, async () => {
          const [dev, ref] = await Promise.all([device(dtype), cpu(dtype)]);
          if (onCuda) {
            assert.equal(dev.info.backend, 'cuda');
            assert.equal(dev.info.activationDType, dtype);
          }
          const { worst, failures } = compareRuns(await runRequests(dev, requests), await runRequests(ref, requests), vocabSize, dtype, requests);
          process.stdout.write(`# ${name} ${dtype}: worst row error ${fmt(worst)}\n`);
          assert.deepEqual(failures, []);
        });
      }

      it('float32, chunked prefill (maxNumTokens 7): the same logits as whole-prompt prefill', async () => {
        const [dev, ref] = await Promise.all([device('float32', { maxNumTokens: 7 }), cpu('float32')]);
        const { failures } = compareRuns(await runRequests(dev, requests), await runRequests(ref, requests), vocabSize, 'float32', requests);
        assert.deepEqual(failures, []);
      });
    });
  });

  it('engine info of a device engine', { skip: !onCuda && 'cuda only' }, async () => {
    const info = native.cudaInfo();
    assert.equal(info.compiled, true, `the addon was built without CUDA: ${info.error ?? ''}`);
    assert.ok(info.devices.length >= 1, `no CUDA device: ${info.error ?? ''}`);
    for (const d of info.devices) {
      assert.match(d.computeCapability, /^\d+\.\d+$/);
      assert.ok(d.totalBytes > 0 && d.freeBytes > 0 && d.freeBytes <= d.totalBytes, JSON.stringify(d));
    }
    const { program, vocabSize, logits, kvCache } = denseProgram();
    const file = await program.write(work.dir, 'info', program.header({ target: deviceTarget('bfloat16').target, weightDType: 'bfloat16', vocabSize, logits, kvCache }));
    const engine = await native.loadEngine(file, { kvCacheTokens: 100 });
    try {
      assert.equal(engine.info.backend, 'cuda');
      assert.equal(engine.info.activationDType, 'bfloat16');
      assert.equal(typeof engine.info.device, 'string');
      assert.ok(engine.info.device.length > 0);
      const bf16Bytes = program.weights.reduce((sum, w) => sum + w.data.length * (w.float32 ? 4 : 2), 0);
      assert.ok(engine.info.weightBytes >= bf16Bytes, `weightBytes ${engine.info.weightBytes} < ${bf16Bytes}`);
      // 100 tokens round up to whole blocks of 8; K and V of 1 layer, 1 head of 4, in float32 or bfloat16.
      assert.equal(engine.info.kvCacheTokens, 104);
      const perToken = 2 * kvCache.numLayers * kvCache.numKvHeads * kvCache.headDim;
      assert.ok([2, 4].map((bytes) => 104 * perToken * bytes).includes(engine.info.kvCacheBytes), `kvCacheBytes ${engine.info.kvCacheBytes}`);
    } finally {
      await engine.dispose();
    }
  });
});
