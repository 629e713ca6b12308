// Prefill attention on tensor cores (attention_prefill.cu, mma.sync; KILN_CUDA_PREFILL_ATTENTION=mma,
// the default) on its own shapes: head dims 64 and 128, 1, 4 and 8 query heads per KV head, sliding
// windows, prompts of 1 to 150 tokens (past two 64-key tiles and not a multiple of one, and one of
// exactly two tiles), several sequences packed in a step. For bfloat16 and float16 engines:
// - against the cpu kernels with the same weights (program.mjs's compareRuns: rows within 3e-2 / 1e-2,
//   greedy tokens equal up to a near tie), whole prompts and chunked prefill (maxNumTokens 37, so a
//   prompt's chunks attend to the keys the earlier chunks stored);
// - against the WMMA kernel it replaces (KILN_CUDA_PREFILL_ATTENTION=wmma, in a child process: the
//   native library reads the switch once per process): every context logits row within a third of the
//   cpu bar (both round Q and P to 16 bits the same way; only the order of float32 sums differs).
// The ops suite (ops.test.mjs) covers the same kernel on its long-prompt programs as well. With
// KILN_CUDA_SUITE_TARGET=cpu both sides of the wmma comparison are the same cpu engine (a dry run of the
// child-process plumbing).
process.env.KILN_CUDA_PREFILL_ATTENTION = 'mma';

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { fmt, makeTmpDir, onCuda, requirePackage, rowRelativeError, target } from './helpers.mjs';
import { TOLERANCE, attentionProgram, compareRuns, runRequests } from './program.mjs';

const native = requirePackage('@kiln/native').loadNative();
const work = makeTmpDir('prefill');
after(() => work.remove());
const workerFile = path.join(path.dirname(fileURLToPath(import.meta.url)), 'prefill-attention-worker.mjs');

const LIMITS = { maxBatchSize: 5, maxSeqLen: 256, maxNumTokens: 512, maxLogitRows: 512 };
const sequence = (length, a, b) => Array.from({ length }, (_, i) => (i * a + b) % 41);
const REQUESTS = [
  { prompt: sequence(150, 11, 5), maxTokens: 6 },
  { prompt: sequence(128, 7, 3), maxTokens: 4 },
  { prompt: sequence(70, 13, 1), maxTokens: 8 },
  { prompt: [7], maxTokens: 10 },
  { prompt: sequence(20, 3, 2), maxTokens: 5 },
];
const PROGRAMS = [
  ['head dim 64, GQA 8 (16 heads, 2 kv), rope, 2 layers', () =>
    attentionProgram({ seed: 31, layers: 2, numHeads: 16, numKvHeads: 2, headDim: 64, rotaryDim: 64, limits: LIMITS, requests: REQUESTS })],
  ['head dim 128, MHA (2 heads), rope, sliding window 50', () =>
    attentionProgram({ seed: 32, numHeads: 2, numKvHeads: 2, headDim: 128, rotaryDim: 128, slidingWindow: 50, limits: LIMITS, requests: REQUESTS })],
  ['head dim 64, GQA 4 (4 heads, 1 kv), sliding window 70', () =>
    attentionProgram({ seed: 33, numHeads: 4, numKvHeads: 1, headDim: 64, slidingWindow: 70, limits: LIMITS, requests: REQUESTS })],
  ['head dim 128, GQA 4 (8 heads, 2 kv), rope', () =>
    attentionProgram({ seed: 34, numHeads: 8, numKvHeads: 2, headDim: 128, rotaryDim: 128, limits: LIMITS, requests: REQUESTS })],
];
const DTYPES = ['bfloat16', 'float16'];
const CHUNK = 37;

function deviceTarget(activationDType) {
  if (onCuda) {
    const computeCapability = native.cudaInfo?.().devices?.[0]?.computeCapability ?? '9.0';
    return { target: { backend: 'cuda', computeCapability, activationDType }, options: {} };
  }
  return { target: { backend: 'cpu', isa: native.cpuInfo().isa }, options: { forceGeneric: true } };
}

/** The requests run on `file` in a child process with KILN_CUDA_PREFILL_ATTENTION=`setting`. */
function runInChild(file, options, requests, setting) {
  const requestsFile = `${file}.requests.json`;
  const outFile = `${file}.${setting}.json`;
  fs.writeFileSync(requestsFile, JSON.stringify(requests));
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [workerFile, file, JSON.stringify(options), requestsFile, outFile],
      { env: { ...process.env, KILN_CUDA_PREFILL_ATTENTION: setting }, timeout: 300_000, maxBuffer: 16 << 20 },
      (error, _stdout, stderr) => {
        if (error) return reject(new Error(`worker (KILN_CUDA_PREFILL_ATTENTION=${setting}) failed: ${stderr.trim() || error.message}`));
        const decode = (s) => new Float32Array(Uint8Array.from(Buffer.from(s, 'base64')).buffer);
        resolve(JSON.parse(fs.readFileSync(outFile, 'utf8')).map((r) => ({ ...r, contextLogits: decode(r.contextLogits), generationLogits: decode(r.generationLogits) })));
      },
    );
  });
}

describe(`prefill attention: ${target} mma.sync kernel against the cpu kernels and the wmma kernel`, () => {
  PROGRAMS.forEach(([name, make], index) => {
    describe(name, () => {
      const { program, vocabSize, logits, kvCache, requests } = make();
      const files = new Map();
      const engineFile = (key, header) => {
        if (!files.has(key)) {
          const file = program.write(work.dir, `p${index}-${key}`, header);
          file.catch(() => {}); // awaited (and reported) by the test that asked for it
          files.set(key, file);
        }
        return files.get(key);
      };
      const cpuFile = (dtype) =>
        engineFile(`cpu-${dtype}`, program.header({ target: { backend: 'cpu', isa: native.cpuInfo().isa }, weightDType: dtype, vocabSize, logits, kvCache }));
      const deviceFile = (dtype) => engineFile(`dev-${dtype}`, program.header({ target: deviceTarget(dtype).target, weightDType: dtype, vocabSize, logits, kvCache }));
      const results = new Map();
      // Each engine loaded, run and disposed of in turn: results kept, engines not.
      const run = (key, file, options) => {
        if (!results.has(key)) {
          const result = (async () => {
            const engine = await native.loadEngine(await file, { numThreads: 2, ...options });
            try {
              return await runRequests(engine, requests);
            } finally {
              await engine.dispose();
            }
          })();
          result.catch(() => {});
          results.set(key, result);
        }
        return results.get(key);
      };

      for (const dtype of DTYPES) {
        const deviceOptions = deviceTarget(dtype).options;
        it(`${dtype}: whole prompts and chunked prefill (maxNumTokens ${CHUNK}) against the cpu`, async () => {
          const reference = await run(`cpu-${dtype}`, cpuFile(dtype), {});
          for (const [label, options] of [['whole', deviceOptions], ['chunked', { ...deviceOptions, maxNumTokens: CHUNK }]]) {
            const device = await run(`dev-${dtype}-${label}`, deviceFile(dtype), options);
            const { worst, failures } = compareRuns(device, reference, vocabSize, dtype, requests);
            process.stdout.write(`# ${name} ${dtype} ${label}: worst row error ${fmt(worst)}\n`);
            assert.deepEqual(failures, [], `${label} prefill`);
          }
        });

        it(`${dtype}: context logits within ${fmt(TOLERANCE[dtype] / 3)} of KILN_CUDA_PREFILL_ATTENTION=wmma`, async () => {
          const file = await deviceFile(dtype);
          const [mma, wmma] = await Promise.all([run(`dev-${dtype}-whole`, deviceFile(dtype), deviceOptions), runInChild(file, { numThreads: 2, ...deviceOptions }, requests, 'wmma')]);
          let worst = 0;
          requests.forEach(({ prompt }, r) => {
            for (let row = 0; row < prompt.length; row++) {
              const e = rowRelativeError(mma[r].contextLogits, row, wmma[r].contextLogits, row, vocabSize);
              worst = Math.max(worst, Number.isNaN(e) ? Infinity : e);
            }
          });
          process.stdout.write(`# ${name} ${dtype}: mma against wmma, worst context row error ${fmt(worst)}\n`);
          assert.ok(worst <= TOLERANCE[dtype] / 3, `worst context row error ${fmt(worst)} > ${fmt(TOLERANCE[dtype] / 3)}`);
        });
      }
    });
  });
});
