// Tensor and pipeline parallelism fixed at conversion time, as TensorRT-LLM's unified checkpoint does:
// which part of each canonical tensor a rank holds. The builder (packages/builder/src/parallel.ts)
// reshapes each rank's network with the same rules, so this file is their one source.
//
// Ranks are numbered rank = ppRank * tpSize + tpRank. Within a pipeline stage, tensor parallelism splits:
// - column-parallel (dimension 0, output features): attention q (by heads), k and v (by KV heads when
//   they divide evenly by tp, otherwise each rank keeps the one KV head its query heads read), the MLP's
//   gate and fc (up), each MoE expert's gate and fc, and the LM head (by vocabulary);
// - row-parallel (dimension 1, input features): attention dense (output) and the MLP's proj (down), and
//   each MoE expert's proj; their outputs are partial sums that the builder all-reduces, so their bias
//   is kept by tp rank 0 only (added once to the sum);
// - the token embedding by vocabulary (rows), when tp divides it: each rank looks up the ids in its
//   range and zeros for the others, and the builder all-reduces the rows;
// - everything else is replicated (norms, the router, learned position tables).
// Pipeline parallelism gives stage s the layers [s * L / pp, (s + 1) * L / pp) (the first stages take one
// more when L does not divide), the embeddings to the first stage and the final norm and LM head to the
// last.
import type { NetworkJson } from '@kiln/core';

export interface ParallelSizes {
  tpSize: number;
  ppSize: number;
}

/** The facts of a network the split rules need, read off its graph (attention and MoE attributes). */
export interface ParallelFacts {
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  /** MoE experts per layer; 0 for dense MLPs. */
  numExperts: number;
}

/** A part of a tensor: rows [start, start + count) of dimension 0 or columns of dimension 1. */
export interface TensorRange {
  dim: 0 | 1;
  start: number;
  count: number;
}

/** What one rank holds of a tensor: the ranges, concatenated along `dim` 0 (several only for MoE experts). */
export interface TensorShard {
  shape: number[];
  ranges: TensorRange[];
}

export type SplitRole = 'heads-q' | 'heads-kv' | 'column' | 'row' | 'row-bias' | 'experts-column' | 'experts-row' | 'vocab' | 'replicated';

/** The token embedding's canonical name: split by vocabulary like the LM head. */
export const VOCAB_EMBEDDING_WEIGHT = 'transformer.vocab_embedding.weight';

const ROLE_RULES: Array<[RegExp, SplitRole]> = [
  [/\.attention\.q\.(weight|bias)$/, 'heads-q'],
  [/\.attention\.[kv]\.(weight|bias)$/, 'heads-kv'],
  [/\.(attention\.dense|mlp\.proj)\.weight$/, 'row'],
  [/\.(attention\.dense|mlp\.proj)\.bias$/, 'row-bias'],
  [/\.mlp\.(gate|fc)\.(weight|bias)$/, 'column'],
  [/\.mlp\.experts\.(gate|fc)\.weight$/, 'experts-column'],
  [/\.mlp\.experts\.proj\.weight$/, 'experts-row'],
  [/^lm_head\.(weight|bias)$/, 'vocab'],
  [/^transformer\.vocab_embedding\.weight$/, 'vocab'],
];

/** How tensor parallelism splits a canonical tensor. */
export function splitRole(name: string): SplitRole {
  for (const [pattern, role] of ROLE_RULES) if (pattern.test(name)) return role;
  return 'replicated';
}

export class MappingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MappingError';
  }
}

/** Reads the split rules' facts off a network: the first attention's heads, the first MoE's experts. */
export function parallelFacts(network: NetworkJson): ParallelFacts {
  const attention = network.nodes.filter((node) => node.op === 'attention');
  if (attention.length === 0) throw new MappingError('the network has no attention op to split');
  const attrs = attention[0].attrs as { numHeads: number; numKvHeads: number; headDim: number };
  const moe = network.nodes.find((node) => node.op === 'moe');
  const logits = network.values.find((value) => value.id === network.outputs.logits);
  const vocabSize = Number(logits?.shape[1]);
  if (!Number.isInteger(vocabSize)) throw new MappingError('the network has no logits output');
  return {
    numLayers: Math.max(...attention.map((node) => Number(node.attrs.layer))) + 1,
    numHeads: attrs.numHeads,
    numKvHeads: attrs.numKvHeads,
    headDim: attrs.headDim,
    vocabSize,
    numExperts: moe ? Number(moe.attrs.numExperts) : 0,
  };
}

/** Checks that tp and pp fit the model; the message names the size that does not divide and by what. */
export function checkMapping(sizes: ParallelSizes, facts: ParallelFacts, network: NetworkJson): void {
  const { tpSize, ppSize } = sizes;
  for (const [key, value] of [['tpSize', tpSize], ['ppSize', ppSize]] as const) {
    if (!Number.isSafeInteger(value) || value < 1 || value > 4096) throw new MappingError(`${key} must be an integer in [1, 4096], got ${value}`);
  }
  if (facts.numHeads % tpSize !== 0) {
    throw new MappingError(`tp ${tpSize} does not divide the ${facts.numHeads} attention heads`);
  }
  if (facts.numKvHeads % tpSize !== 0 && tpSize % facts.numKvHeads !== 0) {
    throw new MappingError(`tp ${tpSize} and the ${facts.numKvHeads} KV heads: neither divides the other, so KV heads can be neither split nor replicated`);
  }
  if (ppSize > facts.numLayers) throw new MappingError(`pp ${ppSize} exceeds the ${facts.numLayers} layers`);
  for (const value of network.values) {
    if (value.kind !== 'parameter' || !value.name) continue;
    const role = splitRole(value.name);
    const shape = value.shape as number[];
    const split = (dimSize: number, what: string) => {
      if (dimSize % tpSize !== 0) throw new MappingError(`tp ${tpSize} does not divide the ${dimSize} ${what} of ${value.name} [${shape}]`);
    };
    if (role === 'column') split(shape[0], 'output features');
    if (role === 'row' && !/\.attention\.dense\./.test(value.name)) split(shape[1], 'input features');
    if (role === 'experts-column') split(shape[0] / facts.numExperts, 'features of each expert');
    if (role === 'experts-row') split(shape[1], 'input features of each expert');
  }
}

/** Layers [start, end) of pipeline stage `ppRank`. */
export function stageLayers(numLayers: number, ppSize: number, ppRank: number): [number, number] {
  const base = Math.floor(numLayers / ppSize);
  const extra = numLayers % ppSize;
  const start = ppRank * base + Math.min(ppRank, extra);
  return [start, start + base + (ppRank < extra ? 1 : 0)];
}

/** Which pipeline stage holds a canonical tensor: its layer's, embeddings first, final norm and head last. */
export function stageOf(name: string, numLayers: number, ppSize: number): number {
  const layer = /^transformer\.layers\.(\d+)\./.exec(name);
  if (layer) {
    const index = Number(layer[1]);
    for (let s = 0; s < ppSize; s++) {
      const [start, end] = stageLayers(numLayers, ppSize, s);
      if (index >= start && index < end) return s;
    }
    throw new MappingError(`${name}: layer ${index} is past the ${numLayers} layers`);
  }
  if (/^(lm_head|transformer\.ln_f)\./.test(name)) return ppSize - 1;
  return 0;
}

/**
 * Whether the LM head and the token embedding are split by vocabulary (otherwise every tp rank holds
 * all of them and computes all logits).
 */
export function splitsVocabulary(facts: ParallelFacts, tpSize: number): boolean {
  return tpSize > 1 && facts.vocabSize % tpSize === 0;
}

/**
 * The part of tensor `name` (full shape `shape`) that tp rank `tpRank` holds, or null when it holds
 * none (a row-parallel bias on tp ranks other than 0).
 */
export function tensorShard(name: string, shape: readonly number[], facts: ParallelFacts, tpSize: number, tpRank: number): TensorShard | null {
  const full = (): TensorShard => ({ shape: [...shape], ranges: [] });
  if (tpSize === 1) return full();
  const rows = (start: number, count: number): TensorShard => ({
    shape: [count, ...shape.slice(1)],
    ranges: [{ dim: 0, start, count }],
  });
  const { headDim, numHeads, numKvHeads, numExperts } = facts;
  switch (splitRole(name)) {
    case 'heads-q': {
      const per = (numHeads / tpSize) * headDim;
      return rows(tpRank * per, per);
    }
    case 'heads-kv': {
      if (numKvHeads % tpSize === 0) {
        const per = (numKvHeads / tpSize) * headDim;
        return rows(tpRank * per, per);
      }
      // Fewer KV heads than ranks: this rank's query heads all read KV head floor(tpRank * kv / tp).
      const head = Math.floor((tpRank * numKvHeads) / tpSize);
      return rows(head * headDim, headDim);
    }
    case 'column': {
      const per = shape[0] / tpSize;
      return rows(tpRank * per, per);
    }
    case 'row': {
      const per = shape[1] / tpSize;
      return { shape: [shape[0], per], ranges: [{ dim: 1, start: tpRank * per, count: per }] };
    }
    case 'row-bias':
      return tpRank === 0 ? full() : null;
    case 'experts-column': {
      const perExpert = shape[0] / numExperts;
      const per = perExpert / tpSize;
      return {
        shape: [numExperts * per, shape[1]],
        ranges: Array.from({ length: numExperts }, (_, e) => ({ dim: 0 as const, start: e * perExpert + tpRank * per, count: per })),
      };
    }
    case 'experts-row': {
      const per = shape[1] / tpSize;
      return { shape: [shape[0], per], ranges: [{ dim: 1, start: tpRank * per, count: per }] };
    }
    case 'vocab': {
      if (!splitsVocabulary(facts, tpSize)) return full();
      const per = shape[0] / tpSize;
      return rows(tpRank * per, per);
    }
    case 'replicated':
      return full();
  }
}
