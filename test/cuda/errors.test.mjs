// What a user sees when a CUDA engine cannot run: an engine built for another compute capability is
// refused, naming it and the `kiln build` command that rebuilds it; a KV cache that cannot fit is
// refused at load, before any request; with no visible device the load fails, naming CUDA.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { convertAndBuild, fixturesDir, kiln, kilnOk, makeTmpDir, onCuda, repoRoot, requirePackage, target } from './helpers.mjs';
import { denseProgram } from './program.mjs';

const native = requirePackage('@kiln/native').loadNative();
const { Engine } = requirePackage('@kiln/runtime');
const cudaOnly = { skip: !onCuda && 'cuda only' };
const work = makeTmpDir('errors');
const llamaFixture = path.join(fixturesDir, 'llama');
let engineDir;

before(async () => {
  engineDir = await convertAndBuild({ workDir: work.dir, modelDir: llamaFixture, name: 'llama', buildFlags: ['--max-batch-size', '2', '--max-seq-len', '64'] });
});
after(() => work.remove());

/** A hand-built engine (every op but attention) for `targetJson`. */
async function handBuilt(name, targetJson) {
  const { program, vocabSize, logits, kvCache } = denseProgram();
  return program.write(work.dir, name, program.header({ target: targetJson, vocabSize, logits, kvCache }));
}

const hostTarget = () => (onCuda ? { backend: 'cuda', computeCapability: native.cudaInfo().devices[0]?.computeCapability ?? '9.0', activationDType: 'float32' } : { backend: 'cpu', isa: native.cpuInfo().isa });

describe(`load-time errors (${target})`, () => {
  it('an engine for compute capability 8.0 is refused, naming it and the rebuild command', cudaOnly, async () => {
    const device = native.cudaInfo().devices[0];
    assert.ok(device, 'a CUDA device is visible');
    assert.notEqual(device.computeCapability, '8.0', 'this check needs a device other than sm_80');
    const file = await handBuilt('sm80', { backend: 'cuda', computeCapability: '8.0', activationDType: 'float32' });
    await assert.rejects(native.loadEngine(file), (error) => {
      assert.match(error.message, /compute capability/i);
      assert.match(error.message, /8\.0/);
      assert.match(error.message, /kiln build/);
      return true;
    });
  });

  it('kiln generate on an engine built with --compute-capability 8.0 exits non-zero with the same advice', cudaOnly, async () => {
    const checkpointDir = path.join(work.dir, 'llama-checkpoint-float32');
    const sm80 = path.join(work.dir, 'llama-sm80');
    await kilnOk(['build', '--checkpoint', checkpointDir, '--output', sm80, '--target', 'cuda', '--dtype', 'float32', '--compute-capability', '8.0', '--max-batch-size', '2', '--max-seq-len', '64']);
    const run = await kiln(['generate', '--engine', sm80, '--input-ids', '1,2,3', '--max-tokens', '2']);
    assert.notEqual(run.status, 0);
    assert.match(run.stderr, /compute capability/i);
    assert.match(run.stderr, /8\.0/);
    assert.match(run.stderr, /kiln build/);
  });

  it('kvCacheBytes 1e15 is refused at load, naming it, before any request', async () => {
    await assert.rejects(Engine.load(engineDir, { kvCacheBytes: 1e15 }), (error) => {
      assert.match(error.message, /does not fit|kvCacheBytes/);
      return true;
    });
    const file = await handBuilt('kv', hostTarget());
    await assert.rejects(native.loadEngine(file, { kvCacheBytes: 1e15 }), /does not fit|kvCacheBytes/);
    // The same engine loads with a cache that fits.
    const engine = await Engine.load(engineDir, { kvCacheBytes: 1 << 20 });
    try {
      const result = await engine.executor.generate({ inputIds: [1, 2, 3], maxTokens: 4, ignoreEos: true });
      assert.equal(result.outputIds.length, 4);
      if (onCuda) {
        assert.ok(engine.info.kvCacheBytes > 0 && engine.info.kvCacheBytes <= 1 << 20, `kvCacheBytes ${engine.info.kvCacheBytes}`);
        assert.ok(engine.info.kvCacheTokens > 0);
      }
    } finally {
      await engine.executor.shutdown();
      await engine.dispose();
    }
  });

  it('with CUDA_VISIBLE_DEVICES="" a CUDA engine fails to load, naming cuda, and no device is listed', cudaOnly, async () => {
    const env = { CUDA_VISIBLE_DEVICES: '' };
    const run = await kiln(['generate', '--engine', engineDir, '--input-ids', '1,2,3', '--max-tokens', '2'], { env });
    assert.notEqual(run.status, 0, `exited ${run.status}: ${run.stdout}`);
    assert.match(run.stderr, /cuda/i);
    const probe = spawnSync(process.execPath, ['-e', "process.stdout.write(JSON.stringify(require('@kiln/native').loadNative().cudaInfo()))"], {
      cwd: repoRoot,
      env: { ...process.env, ...env },
      encoding: 'utf8',
    });
    assert.equal(probe.status, 0, probe.stderr);
    const info = JSON.parse(probe.stdout);
    assert.equal(info.compiled, true);
    assert.deepEqual(info.devices, []);
  });
});
