// One rank of a tensor/pipeline-parallel generation, launched by mpirun from parallel.test.ts (plain
// JavaScript on the built packages: mpirun starts `node`, not Jest). Rank 0 generates greedily and writes
// its tokens and generation logits to the output file; the other ranks follow rank 0.
//   node generate-rank.js <engineDir> <promptIds comma-separated> <maxTokens> <outFile> [killRank]
// With killRank set, that rank kills itself (SIGKILL) mid-generation: the failure test.
'use strict';
const fs = require('node:fs');
const { Engine } = require('@kiln/runtime');

async function main() {
  const [engineDir, promptText, maxTokensText, outFile, killRankText] = process.argv.slice(2);
  const engine = await Engine.load(engineDir, { numThreads: 1 });
  const { rank } = engine.mapping;
  if (killRankText !== undefined && Number(killRankText) === rank && rank !== 0) {
    // Dies after a few steps of following: once generation is under way.
    setTimeout(() => process.kill(process.pid, 'SIGKILL'), 1500);
  }
  if (rank !== 0) {
    await engine.follow();
    await engine.dispose();
    return;
  }
  const inputIds = promptText.split(',').map(Number);
  const steps = [];
  const result = await engine.generate(inputIds, {
    maxTokens: Number(maxTokensText),
    ignoreEos: true,
    returnGenerationLogits: true,
    onToken: () => {
      if (killRankText !== undefined) steps.push(Date.now());
    },
  });
  fs.writeFileSync(outFile, JSON.stringify({ outputIds: result.outputIds, generationLogits: Array.from(result.generationLogits) }));
  await engine.dispose();
}

main().catch((error) => {
  process.stderr.write(`generate-rank: ${error && error.stack ? error.stack : String(error)}\n`);
  process.exit(1);
});
