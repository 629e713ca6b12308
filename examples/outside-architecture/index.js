// An architecture from outside @kiln/models: @kiln/model-example (packages/model-example, the template
// for your own package) registers TinyLlamaForCausalLM when it is required. After that, a model folder
// of that architecture loads like any other: LLM.load converts and builds it once into the engine cache.
// (The kiln command finds such packages in node_modules by their package.json's "kiln" field.)
//
//   node examples/outside-architecture/index.js [model-dir] [cache-dir]
const path = require('node:path');
require('@kiln/model-example');
const { listArchitectures } = require('@kiln/models');
const { LLM } = require('@kiln/runtime');

async function main() {
  const modelDir = process.argv[2] || path.dirname(require.resolve('@kiln/model-example/package.json')) + '/fixtures/tiny_llama';
  console.log(`registered: ${listArchitectures().includes('TinyLlamaForCausalLM')}`);
  const llm = await LLM.load(modelDir, { cacheDir: process.argv[3] || undefined });
  try {
    const { outputIds } = await llm.engine.generate([495, 399, 226, 60, 4], { maxTokens: 16 });
    console.log(`greedy: ${Array.from(outputIds).join(' ')}`);
  } finally {
    await llm.dispose();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
