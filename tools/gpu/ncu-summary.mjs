#!/usr/bin/env node
// Sums an ncu CSV (--csv --metrics gpu__time_duration.sum,dram__bytes_read.sum) of decode steps by
// kernel: one line per (kernel, grid, block) with its launches, mean µs, mean DRAM MB and the DRAM rate.
//   ncu --clock-control none --launch-skip 700 --launch-count 230 --csv \
//       --metrics gpu__time_duration.sum,dram__bytes_read.sum node tools/gpu/decode-steps.mjs ENGINE 16 1 > k.csv
//   node tools/gpu/ncu-summary.mjs k.csv [STEPS]
// STEPS (default 2): decode steps in the capture, to print the sum per step.
import * as fs from 'node:fs';

const [file, stepsText = '2'] = process.argv.slice(2);
if (!file) {
  console.error('usage: node tools/gpu/ncu-summary.mjs NCU_CSV [STEPS]');
  process.exit(2);
}
function parseLine(line) {
  const out = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quoted) {
      if (c === '"' && line[i + 1] === '"') (cur += '"'), i++;
      else if (c === '"') quoted = false;
      else cur += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') out.push(cur), (cur = '');
    else cur += c;
  }
  out.push(cur);
  return out;
}
const lines = fs.readFileSync(file, 'utf8').split('\n');
const headerAt = lines.findIndex((l) => l.startsWith('"ID"'));
if (headerAt < 0) throw new Error(`${file}: no ncu CSV header ("ID", ...)`);
const header = parseLine(lines[headerAt]);
const col = (name) => header.indexOf(name);
const [cId, cName, cGrid, cBlock, cMetric, cUnit, cValue] = ['ID', 'Kernel Name', 'Grid Size', 'Block Size', 'Metric Name', 'Metric Unit', 'Metric Value'].map(col);
const launches = new Map();
for (const line of lines.slice(headerAt + 1)) {
  if (!line.startsWith('"')) continue;
  const f = parseLine(line);
  const id = f[cId];
  const l = launches.get(id) ?? { name: f[cName].replace(/\(.*$/, '').replace(/^void /, ''), grid: f[cGrid], block: f[cBlock] };
  const value = Number(f[cValue].replace(/,/g, ''));
  if (f[cMetric] === 'gpu__time_duration.sum') {
    const toUs = { ns: 1e-3, nsecond: 1e-3, us: 1, usecond: 1, ms: 1e3, msecond: 1e3 }[f[cUnit]];
    if (toUs === undefined) throw new Error(`${file}: unknown time unit ${f[cUnit]}`);
    l.us = value * toUs;
  }
  if (f[cMetric] === 'dram__bytes_read.sum') {
    const scale = { byte: 1, Kbyte: 1e3, Mbyte: 1e6, Gbyte: 1e9, KB: 1e3, MB: 1e6, GB: 1e9 }[f[cUnit]] ?? 1;
    l.bytes = value * scale;
  }
  launches.set(id, l);
}
const groups = new Map();
for (const l of launches.values()) {
  const key = `${l.name} grid ${l.grid} block ${l.block}`;
  const g = groups.get(key) ?? { key, n: 0, us: 0, bytes: 0 };
  g.n++;
  g.us += l.us ?? 0;
  g.bytes += l.bytes ?? 0;
  groups.set(key, g);
}
const steps = Number(stepsText);
let total = 0;
for (const g of [...groups.values()].sort((a, b) => b.us - a.us)) {
  total += g.us;
  const mean = g.us / g.n;
  const mb = g.bytes / g.n / 1e6;
  console.log(`${String(g.n).padStart(4)} x ${mean.toFixed(2).padStart(7)} us ${mb.toFixed(1).padStart(7)} MB ${(mb / 1e6 / (mean / 1e6) / 1e3).toFixed(2).padStart(5)} TB/s  ${g.key.slice(0, 220)}`);
}
console.log(`sum ${total.toFixed(0)} us over ${launches.size} launches: ${(total / steps).toFixed(0)} us per step (${steps} steps)`);
