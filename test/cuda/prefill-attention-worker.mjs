// Child process of prefill-attention.test.mjs: loads one engine file, runs requests on it and writes
// the results, so that an engine runs under another KILN_CUDA_PREFILL_ATTENTION than the test's own
// process (the native library reads the switch once per process). Not a test file.
//   node prefill-attention-worker.mjs <engine file> <load options JSON> <requests JSON file> <output JSON file>
import * as fs from 'node:fs';
import { requirePackage } from './helpers.mjs';
import { runRequests } from './program.mjs';

const [engineFile, optionsJson, requestsFile, outFile] = process.argv.slice(2);
const native = requirePackage('@kiln/native').loadNative();
const engine = await native.loadEngine(engineFile, JSON.parse(optionsJson));
try {
  const results = await runRequests(engine, JSON.parse(fs.readFileSync(requestsFile, 'utf8')));
  const encode = (a) => Buffer.from(Float32Array.from(a).buffer).toString('base64');
  fs.writeFileSync(
    outFile,
    JSON.stringify(results.map((r) => ({ outputIds: Array.from(r.outputIds), contextLogits: encode(r.contextLogits), generationLogits: encode(r.generationLogits) }))),
  );
} finally {
  await engine.dispose();
}
