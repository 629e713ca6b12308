#!/usr/bin/env node
// The GGUF file the benchmark runs in llama.cpp: a Hugging Face LLaMA folder converted to a bf16 Kiln
// checkpoint and written by Kiln's own GGUF export (@kiln/convert `exportGguf`, `kiln export-gguf`):
// llama.cpp's tensor names and metadata, q/k rows permuted for its rope, bf16 matrices bit-identical to
// the checkpoint's and F32 norms (what llama.cpp's CPU ops expect), so the benchmark compares the two
// runtimes on the same weights.
//
// Usage: node tools/bench/hf-to-gguf.mjs <hf-model-dir> <out.gguf>   (after `npm run build`)

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const requireFromRoot = createRequire(path.join(here, '..', '..', 'package.json'));
const { convertCheckpoint, exportGguf } = requireFromRoot('@kiln/convert');
const { loadNative } = requireFromRoot('@kiln/native');

/** Converts `modelDir` to a GGUF file at `outFile`. Returns a summary (tensor bytes, counts). */
export async function convertHfToGguf(modelDir, outFile) {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-gguf-'));
  try {
    const checkpointDir = path.join(work, 'checkpoint');
    await convertCheckpoint({ modelDir, outputDir: checkpointDir, dtype: 'bfloat16' });
    await exportGguf({ checkpointDir, outputFile: outFile, type: 'bf16' });
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  const info = await loadNative().readGguf(path.resolve(outFile));
  const embedding = info.tensors.find((t) => t.name === 'token_embd.weight');
  return {
    file: outFile,
    tensorCount: info.tensors.length,
    tensorBytes: info.tensors.reduce((sum, t) => sum + t.byteLength, 0),
    embeddingBytes: embedding.byteLength,
    vocab: embedding.shape[0],
    fileBytes: info.fileSize,
  };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [modelDir, outFile] = process.argv.slice(2);
  if (!modelDir || !outFile) {
    console.error('usage: node tools/bench/hf-to-gguf.mjs <hf-model-dir> <out.gguf>');
    process.exit(2);
  }
  try {
    const summary = await convertHfToGguf(modelDir, outFile);
    console.log(`wrote ${summary.file}: ${summary.tensorCount} tensors, ${summary.tensorBytes} tensor bytes, ${summary.fileBytes} bytes in all`);
  } catch (error) {
    console.error(`hf-to-gguf: ${error.message}`);
    process.exit(1);
  }
}
