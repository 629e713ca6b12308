// The functional ops a decoder-only transformer is made of. Each checks its operands' shapes, records
// one node in the operands' network and returns the result. Activations are 2-D: [rows, features],
// where rows is the step's packed tokens (`tokens`) or the LM head's rows (`logitRows`).
import { Attrs } from './network';
import { Dim, Shape, Tensor, shapeToString } from './tensor';

function fail(op: string, message: string): never {
  throw new Error(`${op}: ${message}`);
}

function rows(op: string, x: Tensor): Dim {
  if (x.rank !== 2) fail(op, `expects a 2-D activation, got ${x.describe()}`);
  return x.shape[0];
}

function sameShape(op: string, a: Tensor, b: Tensor): Shape {
  if (a.shape.join() !== b.shape.join()) {
    fail(op, `operands differ in shape: ${a.describe()} vs ${b.describe()}`);
  }
  return a.shape;
}

function unary(op: string, x: Tensor, shape: Shape, attrs: Attrs = {}, inputs: Tensor[] = [x]): Tensor {
  return x.network.addNode(op, inputs, [{ dtype: 'float32', shape }], attrs)[0];
}

/** Looks up rows of `table` [vocab, hidden] for int32 `ids` [tokens]; optionally scales them (Gemma). */
export function embedding(ids: Tensor, table: Tensor, options: { scale?: number } = {}): Tensor {
  if (ids.dtype !== 'int32' || ids.rank !== 1) fail('embedding', `ids must be int32 [tokens], got ${ids.describe()}`);
  if (table.rank !== 2) fail('embedding', `table must be [vocab, hidden], got ${table.describe()}`);
  return unary('embedding', ids, [ids.shape[0], table.shape[1]], { scale: options.scale ?? 1 }, [ids, table]);
}

/** y = x · weightᵀ (+ bias), weight [out, in] as PyTorch's nn.Linear stores it. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor): Tensor {
  const r = rows('linear', x);
  if (weight.rank !== 2 || weight.shape[1] !== x.features) {
    fail('linear', `weight ${weight.describe()} does not take input ${x.describe()}`);
  }
  if (bias && (bias.rank !== 1 || bias.shape[0] !== weight.shape[0])) {
    fail('linear', `bias ${bias.describe()} does not match weight ${weight.describe()}`);
  }
  return unary('linear', x, [r, weight.shape[0]], {}, bias ? [x, weight, bias] : [x, weight]);
}

/**
 * Root-mean-square norm over the last dimension; `weightOffset` 1 gives Gemma's (1 + w). With `groupSize`,
 * each consecutive group of that many features is normalized on its own, all groups sharing weight
 * [groupSize] (Qwen3's per-head q/k norm).
 */
export function rmsNorm(x: Tensor, weight: Tensor, options: { eps: number; weightOffset?: number; groupSize?: number }): Tensor {
  rows('rms_norm', x);
  const attrs: Attrs = { eps: options.eps, weightOffset: options.weightOffset ?? 0 };
  if (options.groupSize === undefined) {
    if (weight.shape.join() !== String(x.features)) fail('rms_norm', `weight ${weight.describe()} vs input ${x.describe()}`);
  } else {
    const g = options.groupSize;
    if (!Number.isInteger(g) || g < 1 || x.features % g !== 0) {
      fail('rms_norm', `groupSize ${g} does not divide the ${x.features} features of ${x.describe()}`);
    }
    if (weight.shape.join() !== String(g)) fail('rms_norm', `weight ${weight.describe()} is not [groupSize ${g}]`);
    attrs.groupSize = g;
  }
  return unary('rms_norm', x, x.shape, attrs, [x, weight]);
}

export function add(a: Tensor, b: Tensor): Tensor {
  return unary('add', a, sameShape('add', a, b), {}, [a, b]);
}

export function mul(a: Tensor, b: Tensor): Tensor {
  return unary('mul', a, sameShape('mul', a, b), {}, [a, b]);
}

/** x · sigmoid(x). */
export function silu(x: Tensor): Tensor {
  return unary('silu', x, x.shape);
}

export interface RotaryOptions {
  numHeads: number;
  headDim: number;
  /** Features of each head that rotate (partial rotary); default headDim. */
  rotaryDim?: number;
  /** Inverse frequencies, rotaryDim / 2 of them: see `ropeInverseFrequencies`. */
  inverseFrequencies: number[];
  /** Pairs (2i, 2i + 1) as GPT-J, instead of (i, i + rotaryDim / 2) as LLaMA/NeoX. Default false. */
  interleaved?: boolean;
  /** Multiplies cos and sin (YaRN / LongRoPE attention factor). Default 1. */
  attentionScaling?: number;
}

/** Rotary position embedding of x [tokens, numHeads * headDim] at int32 `positions` [tokens]. */
export function rotaryEmbedding(x: Tensor, positions: Tensor, options: RotaryOptions): Tensor {
  rows('rope', x);
  const rotaryDim = options.rotaryDim ?? options.headDim;
  if (x.features !== options.numHeads * options.headDim) {
    fail('rope', `input ${x.describe()} is not ${options.numHeads} heads of ${options.headDim}`);
  }
  if (rotaryDim % 2 !== 0 || rotaryDim > options.headDim || options.inverseFrequencies.length !== rotaryDim / 2) {
    fail('rope', `rotaryDim ${rotaryDim} needs ${rotaryDim / 2} inverse frequencies, got ${options.inverseFrequencies.length}`);
  }
  if (positions.dtype !== 'int32' || positions.shape.join() !== String(x.shape[0])) {
    fail('rope', `positions must be int32 [${String(x.shape[0])}], got ${positions.describe()}`);
  }
  return unary('rope', x, x.shape, {
    numHeads: options.numHeads,
    headDim: options.headDim,
    rotaryDim,
    interleaved: options.interleaved ?? false,
    attentionScaling: options.attentionScaling ?? 1,
    inverseFrequencies: options.inverseFrequencies,
  }, [x, positions]);
}

export interface AttentionOptions {
  /** Which layer's KV cache this attention reads and writes. */
  layer: number;
  numHeads: number;
  /** Fewer than numHeads for grouped-query (1 for multi-query) attention. */
  numKvHeads: number;
  headDim: number;
  /** Default 1 / sqrt(headDim). */
  scale?: number;
  /** Attend only to the last `slidingWindow` positions (Mistral); 0 or absent for full causal attention. */
  slidingWindow?: number;
  /** Gemma 2: scores = softcap * tanh(scores / softcap) after scaling, before the softmax; 0 or absent = off. */
  softcap?: number;
  /** BLOOM's ALiBi: one slope per query head, adding slope_h * keyPosition to the scaled score. */
  alibiSlopes?: number[];
}

/**
 * Causal self-attention over the KV cache: appends k and v of the step's tokens to the cache of their
 * sequences, then each query attends to its sequence's cached positions up to its own.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions): Tensor {
  const r = rows('attention', q);
  const { numHeads, numKvHeads, headDim } = options;
  if (numHeads % numKvHeads !== 0) fail('attention', `numHeads ${numHeads} is not a multiple of numKvHeads ${numKvHeads}`);
  if (q.features !== numHeads * headDim) fail('attention', `q ${q.describe()} is not ${numHeads} heads of ${headDim}`);
  for (const t of [k, v]) {
    if (t.features !== numKvHeads * headDim || t.shape[0] !== r) {
      fail('attention', `${t.describe()} is not ${numKvHeads} kv heads of ${headDim} over ${String(r)} rows`);
    }
  }
  const attrs: Attrs = {
    layer: options.layer,
    numHeads,
    numKvHeads,
    headDim,
    scale: options.scale ?? 1 / Math.sqrt(headDim),
    slidingWindow: options.slidingWindow ?? 0,
  };
  // Recorded only when used, so the graphs of models without them are unchanged.
  if (options.softcap !== undefined && options.softcap !== 0) {
    if (!(options.softcap > 0)) fail('attention', `softcap must be > 0 (or 0 for none), got ${options.softcap}`);
    attrs.softcap = options.softcap;
  }
  if (options.alibiSlopes !== undefined) {
    if (options.alibiSlopes.length !== numHeads || !options.alibiSlopes.every(Number.isFinite)) {
      fail('attention', `alibiSlopes must be ${numHeads} finite numbers (one per query head), got ${options.alibiSlopes.length}`);
    }
    attrs.alibiSlopes = [...options.alibiSlopes];
  }
  return unary('attention', q, q.shape, attrs, [q, k, v]);
}

/**
 * Keeps the rows the LM head needs: the last token of each sequence (or every token, when the engine
 * gathers context logits). The runtime picks the rows each step.
 */
export function gatherLogitRows(x: Tensor): Tensor {
  if (rows('gather_rows', x) !== 'tokens') fail('gather_rows', `expects [tokens, features], got ${shapeToString(x.shape)}`);
  return unary('gather_rows', x, ['logitRows', x.features]);
}

/** (x - mean) / sqrt(var + eps) * weight (+ bias) over the last dimension, biased variance (torch.nn.LayerNorm). */
export function layerNorm(x: Tensor, weight: Tensor, bias: Tensor | undefined, options: { eps: number }): Tensor {
  rows('layer_norm', x);
  if (weight.shape.join() !== String(x.features)) fail('layer_norm', `weight ${weight.describe()} vs input ${x.describe()}`);
  if (bias && bias.shape.join() !== String(x.features)) fail('layer_norm', `bias ${bias.describe()} vs input ${x.describe()}`);
  return unary('layer_norm', x, x.shape, { eps: options.eps }, bias ? [x, weight, bias] : [x, weight]);
}

/**
 * GELU: approximate 'none' (default) is x/2 (1 + erf(x / sqrt 2)), torch's default; 'tanh' is
 * x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (gelu_new, gelu_pytorch_tanh, BLOOM's gelu).
 */
export function gelu(x: Tensor, options: { approximate?: 'none' | 'tanh' } = {}): Tensor {
  const approximate = options.approximate ?? 'none';
  if (approximate !== 'none' && approximate !== 'tanh') fail('gelu', `approximate must be 'none' or 'tanh', got '${String(approximate)}'`);
  return unary('gelu', x, x.shape, { approximate });
}

/** max(x, 0). */
export function relu(x: Tensor): Tensor {
  return unary('relu', x, x.shape);
}

/** cap * tanh(x / cap) (Gemma 2's final logit softcapping). */
export function softcap(x: Tensor, options: { cap: number }): Tensor {
  if (!(options.cap > 0) || !Number.isFinite(options.cap)) fail('softcap', `cap must be a positive number, got ${options.cap}`);
  return unary('softcap', x, x.shape, { cap: options.cap });
}

/**
 * Learned absolute positions: out[t] = table[positions[t] + offset] for int32 `positions` [tokens], table
 * [maxPositions, hidden] (OPT's table starts at offset 2). A position past the table fails the step.
 */
export function positionEmbedding(positions: Tensor, table: Tensor, options: { offset?: number } = {}): Tensor {
  if (positions.dtype !== 'int32' || positions.rank !== 1) {
    fail('position_embedding', `positions must be int32 [tokens], got ${positions.describe()}`);
  }
  if (table.rank !== 2) fail('position_embedding', `table must be [positions, hidden], got ${table.describe()}`);
  const offset = options.offset ?? 0;
  if (!Number.isInteger(offset) || offset < 0) fail('position_embedding', `offset must be an integer >= 0, got ${offset}`);
  return unary('position_embedding', positions, [positions.shape[0], table.shape[1]], { offset }, [positions, table]);
}

/**
 * Mixtral's sparse mixture of SwiGLU experts over x [rows, H]: router [E, H] scores each token, the topK
 * most probable experts (softmax over E in float32; ties to the lower index) run, their outputs weighted
 * by the kept probabilities (renormalized to sum 1 when normalizeTopK). Expert weights are stacked along
 * dim 0: gate and up [E * I, H], down [E * H, I].
 */
export function mixtureOfExperts(
  x: Tensor,
  router: Tensor,
  experts: { gate: Tensor; up: Tensor; down: Tensor },
  options: { numExperts: number; topK: number; normalizeTopK: boolean },
): Tensor {
  rows('moe', x);
  const { numExperts: E, topK } = options;
  const H = x.features;
  if (!Number.isInteger(E) || E < 1) fail('moe', `numExperts must be a positive integer, got ${E}`);
  if (!Number.isInteger(topK) || topK < 1 || topK > E) fail('moe', `topK must be an integer in [1, ${E}], got ${topK}`);
  if (router.shape.join() !== [E, H].join()) fail('moe', `router ${router.describe()} is not [${E}, ${String(H)}]`);
  const { gate, up, down } = experts;
  if (gate.rank !== 2 || typeof gate.shape[0] !== 'number' || gate.shape[0] % E !== 0 || gate.shape[1] !== H) {
    fail('moe', `gate ${gate.describe()} is not [${E} * intermediate, ${String(H)}]`);
  }
  const I = (gate.shape[0] as number) / E;
  if (up.shape.join() !== gate.shape.join()) fail('moe', `up ${up.describe()} differs from gate ${gate.describe()}`);
  if (down.shape.join() !== [E * (H as number), I].join()) fail('moe', `down ${down.describe()} is not [${E} * ${String(H)}, ${I}]`);
  return unary('moe', x, x.shape, { numExperts: E, topK, normalizeTopK: options.normalizeTopK }, [x, router, gate, up, down]);
}
