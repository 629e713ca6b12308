// Prints, for every vendored fixture, whether Kiln reproduces transformers' greedy tokens and the worst
// per-row relative logit error (‖out − ref‖ / ‖ref‖) over context and generation logits, through the CLI.
// Usage (after npm ci): node tools/reference/accuracy-table.mjs
import { execFileSync } from 'child_process';
import fs from 'fs';
import os from 'os';
import path from 'path';
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const K = path.join(root, 'packages/cli/dist/bin/kiln.js');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-accuracy-'));
const F = path.join(root, 'fixtures/hf-tiny') + '/';
function read(file) {
  const b = fs.readFileSync(file); const n = Number(b.readBigUInt64LE(0)); const h = JSON.parse(b.subarray(8, 8 + n));
  const out = {}; for (const [k, v] of Object.entries(h)) { if (k === '__metadata__') continue; const s = b.subarray(8 + n + v.data_offsets[0], 8 + n + v.data_offsets[1]); const d = new Float32Array(s.length / 4); Buffer.from(d.buffer).set(s); out[k] = d; } return out;
}
const rows = [];
for (const f of fs.readdirSync(F).filter((d) => !d.startsWith('_')).sort()) {
  const ck = `${work}/${f}-ck`, en = `${work}/${f}-en`;
  execFileSync('node', [K, 'convert', '--model', F + f, '--output', ck, '--dtype', 'float32']);
  execFileSync('node', [K, 'build', '--checkpoint', ck, '--output', en, '--gather-context-logits']);
  const ref = JSON.parse(fs.readFileSync(F + f + '/reference.json')); const R = read(F + f + '/reference.safetensors');
  let worst = 0, tokensOk = true;
  ref.prompts.forEach((p, i) => {
    const o = JSON.parse(execFileSync('node', [K, 'generate', '--engine', en, '--input-ids', p.input_ids.join(','), '--max-tokens', '16', '--json', '--ignore-eos', '--logits-out', `${work}/l.safetensors`]));
    tokensOk &&= JSON.stringify(o.outputIds) === JSON.stringify(p.greedy);
    const L = read(`${work}/l.safetensors`); const V = p.logits_shape[1]; const P = p.input_ids.length; const r = R[p.logits_tensor];
    const rowErr = (a, ao, bo) => { let d = 0, nn = 0; for (let c = 0; c < V; c++) { const x = a[ao * V + c], y = r[bo * V + c]; d += (x - y) ** 2; nn += y * y; } return Math.sqrt(d / nn); };
    for (let t = 0; t < P; t++) worst = Math.max(worst, rowErr(L.context_logits, t, t));
    for (let k = 0; k < 16; k++) worst = Math.max(worst, rowErr(L.generation_logits, k, P - 1 + k));
  });
  rows.push(`| ${f} | ${ref.architecture} | ${tokensOk ? '48/48' : 'MISMATCH'} | ${worst.toExponential(1)} |`);
}
fs.rmSync(work, { recursive: true, force: true });
console.log('| fixture | architecture | greedy tokens equal | worst row relative error |\n| --- | --- | --- | --- |\n' + rows.join('\n'));
