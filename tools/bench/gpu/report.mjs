// bench-gpu.json and bench-gpu.md from the figures of one run: tables of the batch-1 decode, the large
// batch, `kiln bench` (in process, over HTTP, TTFT), and every figure of issue 10's "Done when" next to
// its target (met / not met / not measured).
import { TARGETS, VARIANTS } from './config.mjs';

const ok = (x) => x !== undefined && x !== null && !x.error && !x.unavailable;
const fixed = (x, digits) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(digits) : 'n/a');
const mib = (bytes) => (typeof bytes === 'number' ? `${(bytes / 2 ** 20).toFixed(0)}` : 'n/a');
const thousands = (x) => (typeof x === 'number' && Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : 'n/a');

/** One "Done when" line: value against target (`atMost` or `atLeast`). */
function check(figure, value, unit, target, direction, digits = 2) {
  const measured = typeof value === 'number' && Number.isFinite(value);
  const met = measured ? (direction === 'atMost' ? value <= target : value >= target) : null;
  return { figure, value: measured ? value : null, unit, target, direction, met, digits };
}

function benchRow(label, m) {
  if (!ok(m)) return `| ${label} | ${m?.error ? `failed: ${firstLine(m.error)}` : 'not run'} | | | | | | |`;
  const peak = m.peak_kv_blocks_used === undefined || m.peak_kv_blocks_used === null ? 'n/a' : `${m.peak_kv_blocks_used} / ${m.kv_blocks_total ?? 'n/a'}`;
  return `| ${label} | ${thousands(m.output_throughput)} | ${fixed(m.median_ttft_ms, 2)} | ${fixed(m.median_tpot_ms, 3)} | ${fixed(m.duration_s, 2)} | ${mib(m.weight_bytes)} | ${mib(m.kv_cache_bytes)} | ${peak} |`;
}

const firstLine = (text) => String(text).split('\n')[0].slice(0, 200);

export function buildReport({ cfg, model, variants, peer, totalSeconds, stepSeconds = [] }) {
  const reference = variants.find((v) => v.reference) ?? variants[0];
  const shipped = (v) => v.batch1?.find((r) => r.mode === 'as shipped' && !r.error);
  const kiln = shipped(reference);
  const peerOk = ok(peer);
  const eager = peerOk && ok(peer.eager) ? peer.eager : undefined;
  const compiled = peerOk && ok(peer.compiled) ? peer.compiled : undefined;
  const eagerBatch = peerOk && ok(peer.eagerBatch) ? peer.eagerBatch : undefined;
  const compiledBatch = peerOk && ok(peer.compiledBatch) ? peer.compiledBatch : undefined;

  // Bytes read per decoded token: every matrix once; of the embedding table only one row.
  const bytesPerToken = model.weightBytes - cfg.shape.vocab * cfg.shape.hidden * 2;
  const bandwidth = peerOk ? peer.copyBandwidthBytesPerSecond : undefined;
  const boundMs = bandwidth ? (bytesPerToken / bandwidth) * 1e3 : undefined;
  let agree;
  if (kiln && eager?.outputIds) {
    agree = 0;
    while (agree < cfg.batch1.newTokens && kiln.ids[agree] === eager.outputIds[agree]) agree++;
  }

  const targets = [];
  const ratio = (a, b) => (typeof a === 'number' && typeof b === 'number' && b > 0 ? a / b : undefined);
  for (const v of variants) {
    const k = shipped(v);
    const tag = v.reference ? '' : ` (${v.name})`;
    if (v.targets.batch1MsPerToken !== undefined) {
      targets.push(check(`Batch 1 decode ms/token, ${v.name}`, k?.msPerToken, 'ms', v.targets.batch1MsPerToken, 'atMost', 3));
    }
    if (v.reference) {
      targets.push(check('Batch 1: fraction of the HBM bound', ratio(boundMs, k?.msPerToken), '', TARGETS.boundFraction, 'atLeast'));
      targets.push(check('Batch 1: x transformers + static cache + compile', ratio(compiled?.msPerStep, k?.msPerToken), 'x', TARGETS.vsCompileBatch1, 'atLeast'));
      targets.push(check('Batch 1: x transformers eager', ratio(eager?.msPerStep, k?.msPerToken), 'x', TARGETS.vsEagerBatch1, 'atLeast'));
      targets.push(check(`Concurrency ${cfg.serving.concurrency} (kiln bench): output tok/s`, v.highConcurrency?.output_throughput, 'tok/s', TARGETS.highConcurrencyTokS, 'atLeast', 0));
      targets.push(
        check(
          `Concurrency ${cfg.serving.concurrency}: x transformers + compile at batch ${cfg.peer.batch}`,
          ratio(v.highConcurrency?.output_throughput, compiledBatch?.decodeTokensPerSecond),
          'x',
          TARGETS.highConcurrencyVsCompile,
          'atLeast',
        ),
      );
      targets.push(
        check(`Concurrency ${cfg.serving.concurrency}: x concurrency 1`, ratio(v.highConcurrency?.output_throughput, v.concurrency1?.output_throughput), 'x', TARGETS.highConcurrencyVsC1, 'atLeast', 1),
      );
      targets.push(check(`TTFT, ${cfg.ttft.promptTokens}-token prompt, concurrency 1 (median)`, v.ttft?.median_ttft_ms, 'ms', TARGETS.ttftMs, 'atMost'));
      targets.push(check(`Over HTTP: fraction of the in-process output tok/s`, ratio(v.http?.output_throughput, v.highConcurrency?.output_throughput), '', TARGETS.httpVsInProcess, 'atLeast'));
    } else if (v.targets.highConcurrencyVsReference !== undefined) {
      targets.push(
        check(`Concurrency ${cfg.serving.concurrency}: x ${reference.name}${tag}`, ratio(v.highConcurrency?.output_throughput, reference.highConcurrency?.output_throughput), 'x', v.targets.highConcurrencyVsReference, 'atLeast'),
      );
    }
  }

  const errors = [];
  for (const v of variants) {
    for (const [kind, e] of Object.entries(v.engines)) if (e.error) errors.push(`${v.name}: ${kind} engine build: ${firstLine(e.error)}`);
    for (const r of v.batch1 ?? []) if (r.error) errors.push(`${v.name}: batch 1 ${r.mode}: ${firstLine(r.error)}`);
    for (const r of v.longContext ?? []) if (r.error) errors.push(`${v.name}: long context ${r.mode}: ${firstLine(r.error)}`);
    for (const key of ['stepTiming', 'highConcurrency', 'concurrency1', 'http', 'ttft', 'ttftWmma']) if (v[key]?.error) errors.push(`${v.name}: ${key}: ${firstLine(v[key].error)}`);
  }
  if (peer?.error) errors.push(`transformers: ${firstLine(peer.error)}`);
  if (peerOk && peer.incomplete) errors.push(`transformers: ${peer.incomplete}`);
  if (peerOk) for (const key of ['eager', 'eagerBatch', 'compiled', 'compiledBatch']) if (peer[key]?.error) errors.push(`transformers ${key}: ${firstLine(peer[key].error)}`);

  const device = peerOk ? peer.device : (kiln?.device ?? cfg.target);
  const date = new Date().toISOString().slice(0, 10);
  const strip = ({ ids, outputIds, ...rest }) => rest; // token ids stay out of the JSON
  const json = {
    date,
    device,
    target: cfg.target,
    dryRun: cfg.dry,
    command: cfg.command,
    commit: cfg.commit ?? null,
    model: { shape: cfg.shapeName, ...cfg.shape, dtype: 'bfloat16', parameters: model.parameters, weightBytes: model.weightBytes },
    workload: { batch1: cfg.batch1, peerBatch: cfg.peer.batch, serving: cfg.serving, ttft: cfg.ttft, longContext: cfg.longContext },
    hbm: { bytesPerToken, copyBandwidthGBs: bandwidth ? bandwidth / 1e9 : null, boundMsPerToken: boundMs ?? null },
    variants: variants.map((v) => ({ ...v, batch1: v.batch1?.map(strip), longContext: v.longContext?.map(strip) })),
    transformers: peerOk
      ? { version: peer.transformers, torch: peer.torch, compileSetup: peer.compileSetup, incomplete: peer.incomplete, ...Object.fromEntries(['eager', 'eagerBatch', 'compiled', 'compiledBatch'].map((k) => [k, peer[k] && strip(peer[k])])) }
      : { unavailable: peer?.unavailable ?? peer?.error ?? 'not run' },
    greedyTokensEqualToTransformersPrefix: agree ?? null,
    targets: targets.map(({ digits, ...t }) => t),
    errors,
    totalSeconds,
    stepSeconds,
  };

  const lines = [];
  const b = cfg.batch1;
  lines.push(
    `Issue 10 benchmark, ${date}, ${device}${cfg.dry ? ` — DRY RUN on ${cfg.target} engines of the ${cfg.shapeName} shape: the targets are the H200's` : ''}; ` +
      `\`${cfg.command}\`${cfg.commit ? ` at ${cfg.commit}` : ''}; total ${totalSeconds.toFixed(0)} s.`,
    '',
  );
  lines.push(`| run (${device}, batch 1, ${b.promptTokens}-token prompt, ${b.newTokens} new tokens) | first token ms | decode ms/token | tokens/s | of the HBM bound |`, '| --- | --- | --- | --- | --- |');
  const boundShare = (ms) => (boundMs && ms ? `${((boundMs / ms) * 100).toFixed(0)}%` : 'n/a');
  for (const v of variants) {
    for (const r of v.batch1 ?? []) {
      const label = `Kiln, ${cfg.target} ${v.name} engine${r.mode === 'as shipped' ? '' : `, ${r.mode}`}`;
      if (r.error) lines.push(`| ${label} | failed: ${firstLine(r.error)} | | | |`);
      else lines.push(`| ${label} | ${fixed(r.firstTokenMs, 2)} | ${fixed(r.msPerToken, 3)} | ${(1e3 / r.msPerToken).toFixed(0)} | ${boundShare(r.msPerToken)} |`);
    }
  }
  const peerLabel = peerOk ? `transformers ${peer.transformers} (torch ${peer.torch})` : 'transformers';
  // Why a transformers figure is missing.
  const peerMissing = (key) => {
    if (!peerOk) return `not run: ${firstLine(peer?.unavailable ?? peer?.error ?? '')}`;
    if (peer[key]?.error) return `failed: ${firstLine(peer[key].error)}`;
    return peer.incomplete ? 'not finished (stopped)' : 'not run';
  };
  for (const [name, r, key] of [
    ['eager', eager, 'eager'],
    ['static cache + torch.compile', compiled, 'compiled'],
  ]) {
    if (r) lines.push(`| ${peerLabel} ${name} | ${fixed(r.firstTokenMs, 2)} | ${fixed(r.msPerStep, 3)} | ${(1e3 / r.msPerStep).toFixed(0)} | ${boundShare(r.msPerStep)} |`);
    else lines.push(`| ${peerLabel} ${name} | ${peerMissing(key)} | | | |`);
  }
  lines.push('');
  lines.push(
    boundMs
      ? `HBM bound: ${(bytesPerToken / 1e9).toFixed(2)} GB of weights per token / ${(bandwidth / 1e9).toFixed(0)} GB/s device copy = ${boundMs.toFixed(3)} ms/token.`
      : 'HBM bound: not measured (the copy bandwidth comes from the transformers peer).',
  );
  if (agree !== undefined) lines.push(`Greedy tokens of Kiln and transformers eager equal for the first ${agree} of ${b.newTokens} (random weights: near ties).`);
  lines.push('');

  const lc = cfg.longContext;
  const longRuns = variants.flatMap((v) => (v.longContext ?? []).map((r) => ({ v, r })));
  if (longRuns.length > 0) {
    // The bound at a long context adds the KV cache read per token (every layer's K and V of every
    // position), at the mean context of the measured tokens.
    const kvPerPosition = cfg.shape.layers * 2 * cfg.shape.kvHeads * (cfg.shape.hidden / cfg.shape.heads) * 2;
    const longBoundMs = bandwidth ? ((bytesPerToken + kvPerPosition * (lc.promptTokens + lc.newTokens / 2)) / bandwidth) * 1e3 : undefined;
    const shipped = longRuns.find(({ r }) => r.mode === 'as shipped' && !r.error)?.r;
    lines.push(`| run (batch 1, ${lc.promptTokens}-token prompt, ${lc.newTokens} new tokens) | decode ms/token | tokens/s | as shipped is | of the HBM bound |`, '| --- | --- | --- | --- | --- |');
    for (const { v, r } of longRuns) {
      const label = `Kiln, ${cfg.target} ${v.name} engine, ${r.mode}`;
      if (r.error) lines.push(`| ${label} | failed: ${firstLine(r.error)} | | | |`);
      else {
        const speedup = shipped && r !== shipped ? `${(r.msPerToken / shipped.msPerToken).toFixed(2)}x faster` : '';
        lines.push(`| ${label} | ${fixed(r.msPerToken, 3)} | ${(1e3 / r.msPerToken).toFixed(0)} | ${speedup} | ${longBoundMs ? `${((longBoundMs / r.msPerToken) * 100).toFixed(0)}%` : 'n/a'} |`);
      }
    }
    lines.push('', longBoundMs ? `HBM bound at this context: weights + ${(kvPerPosition / 1024).toFixed(1)} KiB of KV cache per position = ${longBoundMs.toFixed(3)} ms/token.` : 'HBM bound at this context: not measured.', '');
  }

  lines.push(`| transformers, batch ${cfg.peer.batch}, ${b.promptTokens}-token prompts, ${b.newTokens} new tokens | ms/step | output tok/s (decode steps) | output tok/s (end to end) |`, '| --- | --- | --- | --- |');
  for (const [name, r, key] of [
    ['eager', eagerBatch, 'eagerBatch'],
    ['static cache + torch.compile', compiledBatch, 'compiledBatch'],
  ]) {
    if (r) lines.push(`| ${name} | ${fixed(r.msPerStep, 2)} | ${thousands(r.decodeTokensPerSecond)} | ${thousands(r.endToEndTokensPerSecond)} |`);
    else lines.push(`| ${name} | ${peerMissing(key)} | | |`);
  }
  lines.push('');

  const s = cfg.serving;
  lines.push(
    `| kiln bench (${s.inputLen} in / ${s.outputLen} out, no rate limit) | output tok/s | median TTFT ms | median TPOT ms | duration s | weights MiB | KV cache MiB | KV blocks in use (peak / total) |`,
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
  );
  for (const v of variants) {
    lines.push(benchRow(`${v.name}: in process, ${s.numRequests} requests, concurrency ${s.concurrency}`, v.highConcurrency));
    lines.push(benchRow(`${v.name}: in process, ${s.c1Requests} requests, concurrency 1`, v.concurrency1));
    if (v.reference) lines.push(benchRow(`${v.name}: over HTTP (kiln serve), ${s.numRequests} requests, concurrency ${s.concurrency}`, v.http));
    lines.push(benchRow(`${v.name}: TTFT, ${cfg.ttft.numRequests} requests of ${cfg.ttft.promptTokens} in / 1 out, concurrency 1`, v.ttft));
    if (v.ttftWmma) lines.push(benchRow(`${v.name}: TTFT as above, KILN_CUDA_PREFILL_ATTENTION=wmma`, v.ttftWmma));
    if (v.tuned?.highConcurrency) lines.push(benchRow(`${v.name}, GEMMs tuned (KILN_CUDA_GEMM_TUNE=1): concurrency ${s.concurrency}`, v.tuned.highConcurrency));
    if (v.tuned?.ttft) lines.push(benchRow(`${v.name}, GEMMs tuned: TTFT, ${cfg.ttft.numRequests} requests of ${cfg.ttft.promptTokens} in / 1 out`, v.tuned.ttft));
  }
  lines.push('');
  const refHigh = reference.highConcurrency;
  if (ok(refHigh)) lines.push(`Command: \`${refHigh.command.replace(/--engine \S+/, '--engine <engine>')}\`. Over HTTP, the KV figures come from the server's /metrics, sampled (weights and KV cache bytes are not served).`, '');

  lines.push('| issue 10 "Done when" | measured | target | |', '| --- | --- | --- | --- |');
  for (const t of targets) {
    const value = t.value === null ? 'n/a' : `${t.unit === 'tok/s' ? thousands(t.value) : t.value.toFixed(t.digits)}${t.unit && t.unit !== 'tok/s' ? ` ${t.unit}` : ''}${t.unit === 'tok/s' ? ' tok/s' : ''}`;
    const target = `${t.direction === 'atMost' ? '≤' : '≥'} ${t.unit === 'tok/s' ? thousands(t.target) : t.target}${t.unit ? ` ${t.unit}` : ''}`;
    lines.push(`| ${t.figure} | ${value} | ${target} | ${t.met === null ? 'not measured' : t.met ? 'met' : 'NOT met'} |`);
  }
  // The variants this run skipped (KILN_BENCH_VARIANTS) have targets too: name them, unmeasured.
  for (const v of VARIANTS) {
    if (variants.some((run) => run.name === v.name)) continue;
    const ms = v.targets?.batch1MsPerToken;
    lines.push(`| Batch 1 decode ms/token, ${v.name} | not in this run (KILN_BENCH_VARIANTS) | ${ms ? `≤ ${ms} ms` : ''} | not measured |`);
  }
  lines.push(
    '',
    `Ratios: batch 1 against transformers' decode ms/step at batch 1; concurrency ${cfg.serving.concurrency} (kiln bench's output tok/s, prefill and ramp included) against transformers + compile's tok/s of its decode steps at batch ${cfg.peer.batch} (batch / ms/step, the issue's table).`,
  );
  if (errors.length) lines.push('', `Errors (${errors.length}):`, ...errors.map((e) => `- ${e}`));
  return { json, md: lines.join('\n') };
}
