// The memory figures of `kiln bench`: the engine's weights and KV cache (device memory on a cuda engine),
// and the most KV cache blocks referenced by requests at once during the measured run. In process they
// come from the engine's info and every executor iteration; over HTTP from the server's Prometheus
// /metrics (kiln_kv_blocks_used, kiln_kv_blocks_total), sampled, and the bytes are not served (null).

export interface BenchMemory {
  /** Where the weights and the KV cache live: the engine's backend ("cuda", "cpu"); null when unknown (HTTP). */
  device: string | null;
  /** Bytes of weights resident where the kernels read them; null when unknown. */
  weightBytes: number | null;
  /** Bytes of the KV cache as allocated; null when unknown. */
  kvCacheBytes: number | null;
  kvBlocksTotal: number | null;
  /** Tokens per KV block; null when unknown. */
  kvBlockTokens: number | null;
  /** The most KV blocks in use (referenced by a request) at once during the run; null when unknown. */
  peakKvBlocksUsed: number | null;
  /** How the peak was observed, or why it is unknown. */
  peakSource: string;
}

/** The figures as `kiln bench --json` prints them (snake_case, next to vLLM's metric names). */
export function memoryJson(m: BenchMemory): Record<string, number | string | null> {
  return {
    memory_device: m.device,
    weight_bytes: m.weightBytes,
    kv_cache_bytes: m.kvCacheBytes,
    kv_blocks_total: m.kvBlocksTotal,
    kv_block_tokens: m.kvBlockTokens,
    peak_kv_blocks_used: m.peakKvBlocksUsed,
    peak_kv_blocks_used_source: m.peakSource,
  };
}

const MIB = 2 ** 20;

/** The table's memory section. */
export function memoryRows(m: BenchMemory): [string, string][] {
  const bytes = (value: number | null, what: string) => (value === null ? `unavailable (${what})` : (value / MIB).toFixed(2));
  let peak: string;
  if (m.peakKvBlocksUsed === null) peak = `unavailable (${m.peakSource})`;
  else {
    const share = m.kvBlocksTotal ? ` (${((m.peakKvBlocksUsed / m.kvBlocksTotal) * 100).toFixed(1)}%)` : '';
    peak = `${m.peakKvBlocksUsed} of ${m.kvBlocksTotal ?? '?'}${share}`;
  }
  const rows: [string, string][] = [
    ['Weights (MiB)', bytes(m.weightBytes, 'not reported by the server')],
    ['KV cache (MiB)', bytes(m.kvCacheBytes, 'not reported by the server')],
    ['Peak KV blocks in use', peak],
  ];
  if (m.peakKvBlocksUsed !== null && m.kvBlockTokens !== null) rows.push(['Peak KV tokens in use', String(m.peakKvBlocksUsed * m.kvBlockTokens)]);
  return rows;
}

/** The value of an unlabelled Prometheus sample `name value` in a text exposition; undefined when absent. */
export function prometheusValue(text: string, name: string): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== ' ' && rest[0] !== '{') continue;
    const value = Number(rest.slice(rest.lastIndexOf(' ') + 1));
    if (Number.isFinite(value)) return value;
  }
  return undefined;
}
