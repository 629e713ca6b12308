import * as fs from 'node:fs';
import * as path from 'node:path';
import { scribe7mPath } from '@kiln/scribe-7m';

// The vendored folder must be a complete Hugging Face checkpoint: these are the files the converter,
// the tokenizer and the reference tests open.
const expectedFiles = [
  'config.json',
  'generation_config.json',
  'model.safetensors',
  'tokenizer.json',
  'tokenizer_config.json',
  'reference.json',
  'reference.safetensors',
];

describe('scribe7mPath', () => {
  it('is an absolute folder holding the checkpoint, tokenizer and references', () => {
    expect(path.isAbsolute(scribe7mPath)).toBe(true);
    for (const name of expectedFiles) expect(fs.statSync(path.join(scribe7mPath, name)).isFile()).toBe(true);
  });

  it('holds the LLaMA config the model card describes', () => {
    const config = JSON.parse(fs.readFileSync(path.join(scribe7mPath, 'config.json'), 'utf8'));
    expect(config.architectures).toEqual(['LlamaForCausalLM']);
    expect([config.num_hidden_layers, config.hidden_size, config.vocab_size]).toEqual([6, 256, 4096]);
  });

  it('holds whole safetensors files (header length + header + data = file size)', () => {
    for (const name of ['model.safetensors', 'reference.safetensors']) {
      const bytes = fs.readFileSync(path.join(scribe7mPath, name));
      const headerLength = Number(bytes.readBigUInt64LE(0));
      const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8')) as Record<
        string,
        { data_offsets?: [number, number] }
      >;
      const dataEnd = Math.max(...Object.values(header).map((entry) => entry.data_offsets?.[1] ?? 0));
      expect(8 + headerLength + dataEnd).toBe(bytes.length);
    }
  });
});
