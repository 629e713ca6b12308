// One rank of a tensor/pipeline-parallel generation, launched by `mpirun` from parallel.test.ts (plain
// JavaScript on the built packages, since mpirun starts `node`, not Jest). Rank 0 runs the prompts
// concurrently (in-flight batching: several sequences per step), greedy, and writes each one's tokens
// and generation logits to the output file; the other ranks follow rank 0.
//   node generate-rank.js <engineDir> <prompts: ids comma-separated, prompts ';'-separated> <maxTokens> <outFile> [killRank]
// With killRank (the failure test): rank 0 writes <outFile>.started at its first token, and rank
// killRank, polling for that file, kills itself (SIGKILL) mid-generation.
'use strict';
const fs = require('node:fs');
const { Engine } = require('@kiln/runtime');

async function main() {
  const [engineDir, promptsText, maxTokensText, outFile, killRankText] = process.argv.slice(2);
  const engine = await Engine.load(engineDir, { numThreads: 1 });
  const { rank } = engine.mapping;
  const startedFile = `${outFile}.started`;
  if (killRankText !== undefined && Number(killRankText) === rank) {
    const poll = setInterval(() => {
      if (fs.existsSync(startedFile)) {
        clearInterval(poll);
        process.kill(process.pid, 'SIGKILL');
      }
    }, 5);
  }
  if (rank !== 0) {
    await engine.follow();
    await engine.dispose();
    return;
  }
  const prompts = promptsText.split(';').map((prompt) => prompt.split(',').map(Number));
  let started = false;
  const results = await Promise.all(
    prompts.map((inputIds) =>
      engine.generate(inputIds, {
        maxTokens: Number(maxTokensText),
        ignoreEos: true,
        returnGenerationLogits: true,
        onToken: () => {
          if (killRankText !== undefined && !started) {
            started = true;
            fs.writeFileSync(startedFile, '');
          }
        },
      }),
    ),
  );
  fs.writeFileSync(outFile, JSON.stringify(results.map((r) => ({ outputIds: r.outputIds, generationLogits: Array.from(r.generationLogits) }))));
  await engine.dispose();
}

main().catch((error) => {
  process.stderr.write(`generate-rank: ${error && error.stack ? error.stack : String(error)}\n`);
  process.exit(1);
});
