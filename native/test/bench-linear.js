#!/usr/bin/env node
// Benchmark of the linear kernel through the testing binding (not a Jest test).
//
//   KILN_NATIVE_BINARY=native/build-x/Release/kiln.node node native/test/bench-linear.js \
//     [--K 4096] [--N 4096] [--dtype bfloat16] [--threads 1,2] [--rows 1] [--isa avx2] [--ms 1500]
//
// --K, --N, --rows, --threads and --isa take comma-separated lists; every combination is measured, e.g.
// the shapes of a small model's batched decode step:
//   ... bench-linear.js --K 256,768 --N 256,768,4096 --rows 1,4,16,64 --isa avx2 --threads 1,2 --ms 300
//
// Decode (rows = 1) is a GEMV bound by memory bandwidth, so it is reported in GB/s of weight bytes
// streamed; more rows (prefill) are reported in GFLOP/s. Each configuration is timed for about --ms
// milliseconds after a warm-up, and the median call time is used.
'use strict';
const path = require('node:path');

function parseArgs(argv) {
  const opts = { K: '4096', N: '4096', dtype: 'bfloat16', threads: '1,2', rows: '1', isa: '', ms: 1500 };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!(key in opts) || i + 1 >= argv.length) throw new Error(`bench-linear: unknown or incomplete option ${argv[i]}`);
    opts[key] = typeof opts[key] === 'number' ? Number(argv[i + 1]) : argv[i + 1];
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const binary = process.env.KILN_NATIVE_BINARY ?? path.join(__dirname, '..', 'build', 'Release', 'kiln.node');
const testing = require(binary).testing;
const ladder = ['generic', 'avx2', 'avx512', 'avx512_bf16'];
const isas = opts.isa ? opts.isa.split(',') : ladder.slice(0, ladder.indexOf(testing.cpuIsa()) + 1).reverse();
const { dtype } = opts;
const list = (text) => text.split(',').map(Number);

for (const K of list(opts.K)) {
  for (const N of list(opts.N)) {
    // Random weights in the requested storage type.
    const values = new Float32Array(N * K);
    for (let i = 0; i < values.length; i++) values[i] = Math.random() * 2 - 1;
    const weight = dtype === 'float32' ? values : dtype === 'float16' ? testing.f32ToF16(values) : testing.f32ToBf16(values);
    const weightBytes = weight.byteLength;

    console.log(`linear N=${N} K=${K} ${dtype}: ${(weightBytes / 2 ** 20).toFixed(1)} MiB of weights, cpu isa ${testing.cpuIsa()}`);
    for (const isa of isas) {
      for (const rows of list(opts.rows)) {
        const x = new Float32Array(rows * K).map(() => Math.random() * 2 - 1);
        for (const threads of list(opts.threads)) {
          // bfloat16 weights are measured as engines run them: x rounded to bfloat16 (vdpbf16ps on avx512_bf16).
          const args = { x, rows, K, N, weight, weightDtype: dtype, isa, threads, bf16Activations: dtype === 'bfloat16' };
          for (let i = 0; i < 3; i++) testing.linear(args); // warm-up: page in weights, start the pool
          const times = [];
          const cpuTimes = [];
          const start = process.hrtime.bigint();
          while (Number(process.hrtime.bigint() - start) / 1e6 < opts.ms || times.length < 5) {
            const c0 = process.cpuUsage();
            const t0 = process.hrtime.bigint();
            testing.linear(args);
            times.push(Number(process.hrtime.bigint() - t0) / 1e9);
            const c = process.cpuUsage(c0);
            cpuTimes.push((c.user + c.system) / 1e6 / threads);
          }
          times.sort((a, b) => a - b);
          cpuTimes.sort((a, b) => a - b);
          const median = times[Math.floor(times.length / 2)];
          // On a shared machine the wall time counts the moments the OS gave the cores to others; CPU time
          // per thread does not (but includes the pool's spinning), so compute-bound kernels compare better
          // by it.
          const cpuMedian = cpuTimes[Math.floor(cpuTimes.length / 2)];
          const gbs = weightBytes / median / 1e9;
          const gflops = (2 * rows * N * K) / median / 1e9;
          console.log(
            `  ${isa.padEnd(7)} rows=${String(rows).padEnd(4)} threads=${threads}: ${(median * 1e3).toFixed(3)} ms/call ` +
              `(best ${(times[0] * 1e3).toFixed(3)}), ${gbs.toFixed(2)} GB/s weights, ${gflops.toFixed(2)} GFLOP/s, ` +
              `${((2 * rows * N * K) / cpuMedian / 1e9).toFixed(2)} GFLOP/s per thread-second of CPU, ${times.length} calls`,
          );
        }
      }
    }
  }
}
