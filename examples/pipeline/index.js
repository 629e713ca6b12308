// A pipeline composed in code, no CLI: a Hugging Face model folder (scribe-7m's) is converted to a Kiln
// checkpoint, built into an engine, and run by the engine's in-flight batching executor: two requests
// stream side by side, and the second (which would run for 200 tokens) is cancelled after four.
//
//   node examples/pipeline/index.js [work-dir]
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { convertCheckpoint } = require('@kiln/convert');
const { buildEngine } = require('@kiln/builder');
const { Engine, StreamDecoder, Tokenizer } = require('@kiln/runtime');
const { scribe7mPath } = require('@kiln/scribe-7m');

/** Streams one request, printing its text as it comes; aborts it after `cancelAfter` tokens if given. */
async function run(executor, tokenizer, label, prompt, cancelAfter) {
  const controller = new AbortController();
  const decoder = new StreamDecoder(tokenizer);
  const request = cancelAfter === undefined
    ? { inputIds: tokenizer.encode(prompt), maxTokens: 24, temperature: 0 }
    : { inputIds: tokenizer.encode(prompt), maxTokens: 200, ignoreEos: true, temperature: 0 };
  let tokens = 0;
  let text = '';
  let finishReason;
  for await (const event of executor.stream(request, { signal: controller.signal })) {
    for (const id of event.outputIds) text += decoder.push(id) ?? '';
    tokens += event.outputIds.length;
    if (cancelAfter !== undefined && tokens >= cancelAfter) controller.abort();
    finishReason = event.finishReason ?? finishReason;
  }
  console.log(`${label}: ${JSON.stringify(prompt + text)} [${finishReason}, ${tokens} tokens]`);
  return { tokens, finishReason };
}

async function main() {
  const work = process.argv[2] ?? fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-pipeline-'));
  const checkpointDir = path.join(work, 'checkpoint');
  await convertCheckpoint({ modelDir: scribe7mPath, outputDir: checkpointDir, dtype: 'float32' });
  const { engineDir, config } = await buildEngine({
    checkpointDir,
    outputDir: path.join(work, 'engine'),
    config: { maxBatchSize: 4, maxSeqLen: 256 },
    onProgress: ({ stage, message }) => console.log(`build ${stage}: ${message}`),
  });
  console.log(`engine: ${engineDir} (${config.target}, ${config.dtype})`);

  const engine = await Engine.load(engineDir);
  const tokenizer = await Tokenizer.load(engineDir);
  try {
    const [full, cancelled] = await Promise.all([
      run(engine.executor, tokenizer, 'full', 'And the LORD said unto Moses,'),
      run(engine.executor, tokenizer, 'cancelled', 'In the beginning', 4),
    ]);
    if (full.finishReason === 'cancelled' || cancelled.finishReason !== 'cancelled') throw new Error('unexpected finish reasons');
    const { kvBlocksUsed, kvBlocksTotal } = engine.executor.stats();
    console.log(`KV blocks in use after both: ${kvBlocksUsed} of ${kvBlocksTotal}`);
  } finally {
    await engine.dispose();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
