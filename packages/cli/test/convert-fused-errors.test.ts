// A model whose fused q/k/v tensor does not have the shape its config implies fails conversion naming
// the tensor, its shape and the expected one (Phi-3's qkv_proj, cut into q, k and v at conversion).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fixturesDir, kiln } from './reference-util';

const workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-fused-'));
afterAll(() => fs.rmSync(workDir, { recursive: true, force: true }));

/** Copies a fixture, giving `tensor` another shape with the same element count (the file stays valid). */
function withReshapedTensor(fixture: string, tensor: string, shape: number[]): string {
  const dir = path.join(workDir, fixture);
  fs.cpSync(path.join(fixturesDir, fixture), dir, { recursive: true });
  const file = path.join(dir, 'model.safetensors');
  const bytes = fs.readFileSync(file);
  const length = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + length).toString('utf8'));
  header[tensor].shape = shape;
  // Same byte length: pad with spaces (allowed after the header JSON), so data offsets do not move.
  const text = JSON.stringify(header);
  if (text.length > length) throw new Error('test setup: header grew');
  Buffer.from(text.padEnd(length, ' '), 'utf8').copy(bytes, 8);
  fs.writeFileSync(file, bytes);
  return dir;
}

test('phi3: a wrong-shape fused qkv_proj fails naming the tensor and both shapes', () => {
  const tensor = 'model.layers.1.self_attn.qkv_proj.weight';
  const modelDir = withReshapedTensor('phi3', tensor, [64, 128]);
  const run = kiln(['convert', '--model', modelDir, '--output', path.join(workDir, 'out'), '--dtype', 'float32']);
  expect(run.status).not.toBe(0);
  expect(run.stderr).toContain(`"${tensor}"`);
  expect(run.stderr).toContain('[64, 128]');
  expect(run.stderr).toContain('[128, 64]');
});
