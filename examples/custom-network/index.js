// A network that is not in Kiln's model zoo, defined with @kiln/core, its weights written to a
// safetensors file, then converted, built into an engine and run, all in code.
//
// The model counts: token t is followed by t + 1 (mod 16). Its embedding is the identity, its LM head a
// shifted identity, and its one attention layer writes nothing back (a zero output projection), so
// greedy decoding from [3] must give 4, 5, 6, ... That makes the result checkable by eye.
//
//   node examples/custom-network/index.js [work-dir]
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Network, add, attention, embedding, gatherLogitRows, linear, ropeInverseFrequencies, rotaryEmbedding } = require('@kiln/core');
const { registerArchitecture, requireInteger } = require('@kiln/models');
const { convertCheckpoint } = require('@kiln/convert');
const { buildEngine } = require('@kiln/builder');
const { Engine } = require('@kiln/runtime');

const V = 16; // vocabulary size = hidden size

// 1. The network, with @kiln/core's ops. Parameter names are what the builder binds weights to.
function buildCounterNetwork(config) {
  const n = config.vocabSize;
  const network = new Network('counter');
  const ids = network.input('input_ids', 'int32', ['tokens']);
  const positions = network.input('position_ids', 'int32', ['tokens']);
  const rope = { numHeads: 1, headDim: n, inverseFrequencies: ropeInverseFrequencies(10000, n) };
  let hidden = embedding(ids, network.parameter('embed.weight', [n, n]));
  const q = rotaryEmbedding(linear(hidden, network.parameter('attn.q.weight', [n, n])), positions, rope);
  const k = rotaryEmbedding(linear(hidden, network.parameter('attn.k.weight', [n, n])), positions, rope);
  const v = linear(hidden, network.parameter('attn.v.weight', [n, n]));
  const context = attention(q, k, v, { layer: 0, numHeads: 1, numKvHeads: 1, headDim: n });
  hidden = add(hidden, linear(context, network.parameter('attn.o.weight', [n, n])));
  network.output('logits', linear(gatherLogitRows(hidden), network.parameter('lm_head.weight', [n, n])));
  return network;
}

// 2. Registered as an architecture: how a Hugging Face-style config.json and weights map onto it.
const TENSORS = ['embed', 'attn.q', 'attn.k', 'attn.v', 'attn.o', 'lm_head'];
registerArchitecture({
  name: 'CounterForCausalLM',
  family: 'counter',
  parseConfig: (hf, file) => ({ vocabSize: requireInteger(hf, 'vocab_size', file), maxPositionEmbeddings: 64 }),
  checkpointTensors: (config) =>
    TENSORS.map((t) => ({ name: `${t}.weight`, shape: [config.vocabSize, config.vocabSize], sources: [{ tensor: `${t}.weight`, shape: [config.vocabSize, config.vocabSize] }] })),
  buildNetwork: buildCounterNetwork,
});

// 3. The weights, in a safetensors file: an 8-byte header length, a JSON header, then the data.
function writeSafetensors(file, tensors) {
  const header = {};
  const buffers = [];
  let offset = 0;
  for (const [name, { shape, values }] of Object.entries(tensors)) {
    const data = Buffer.from(new Float32Array(values).buffer);
    header[name] = { dtype: 'F32', shape, data_offsets: [offset, offset + data.length] };
    buffers.push(data);
    offset += data.length;
  }
  const json = Buffer.from(JSON.stringify(header));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([length, json, ...buffers]));
}
const matrix = (f) => Array.from({ length: V * V }, (_, i) => f(Math.floor(i / V), i % V));
const identity = matrix((row, col) => (row === col ? 1 : 0));

async function main() {
  const work = process.argv[2] ?? fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-custom-network-'));
  const modelDir = path.join(work, 'hf');
  fs.mkdirSync(modelDir, { recursive: true });
  fs.writeFileSync(path.join(modelDir, 'config.json'), JSON.stringify({ architectures: ['CounterForCausalLM'], vocab_size: V, torch_dtype: 'float32' }));
  writeSafetensors(path.join(modelDir, 'model.safetensors'), {
    'embed.weight': { shape: [V, V], values: identity },
    'attn.q.weight': { shape: [V, V], values: identity },
    'attn.k.weight': { shape: [V, V], values: identity },
    'attn.v.weight': { shape: [V, V], values: identity },
    'attn.o.weight': { shape: [V, V], values: matrix(() => 0) },
    // logits[j] = hidden[j - 1]: the row of token t + 1 reads column t.
    'lm_head.weight': { shape: [V, V], values: matrix((row, col) => (row === (col + 1) % V ? 1 : 0)) },
  });

  // 4. Convert, build, run.
  const checkpointDir = path.join(work, 'checkpoint');
  await convertCheckpoint({ modelDir, outputDir: checkpointDir });
  const { engineDir } = await buildEngine({ checkpointDir, outputDir: path.join(work, 'engine'), config: { maxBatchSize: 1 } });
  const engine = await Engine.load(engineDir);
  try {
    const result = await engine.generate([3], { maxTokens: 8 });
    console.log(`generated: ${result.outputIds.join(' ')}`);
  } finally {
    await engine.dispose();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
