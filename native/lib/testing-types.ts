// Bindings to single kernels, for the tests that compare them with scalar references.
// Owned by the kernels: see native/src/addon/testing.cpp.
//
// Every function is synchronous (test-only, small inputs). Matrices are row-major Float32Arrays with an
// optional row stride (default: the number of columns); an output with a stride larger than its columns
// is zero between rows. Every length, stride and index is checked first: a value of the wrong kind throws
// a TypeError, a wrong size or an out-of-range index a RangeError, both naming the argument.

import type { KernelIsa } from './types';

/** Weight storage types the kernels read. 16-bit weights are passed as their raw bits in a Uint16Array. */
export type KernelWeightDType = 'float32' | 'float16' | 'bfloat16';

/** Which code path runs, and on how many threads. */
export interface KernelRunOptions {
  /** A kernel set (default 'generic'); a RangeError above what cpuIsa() reports. */
  isa?: KernelIsa;
  /** Threads for the call, the calling thread included (default 1). Pools are cached per count. */
  threads?: number;
}

export interface EmbeddingArgs extends KernelRunOptions {
  /** [numTokens] token ids, each in [0, vocab). */
  ids: Int32Array;
  /** [vocab, hidden]: Float32Array for 'float32', raw bits in a Uint16Array otherwise. */
  table: Float32Array | Uint16Array;
  tableDtype: KernelWeightDType;
  hidden: number;
  /** Multiplier of every output (default 1). */
  scale?: number;
  outStride?: number;
}

export interface LinearArgs extends KernelRunOptions {
  /** [rows, K] with row stride xStride. */
  x: Float32Array;
  rows: number;
  K: number;
  N: number;
  xStride?: number;
  yStride?: number;
  /** [N, K], exactly N * K elements (int8: the codes; float8_e4m3fn: the e4m3 codes; q8_0: the N * K / 32 blocks of 34 bytes). */
  weight: Float32Array | Uint16Array | Int8Array | Uint8Array;
  weightDtype: KernelWeightDType | 'int8' | 'float8_e4m3fn' | 'q8_0';
  /**
   * Required for quantized weights, refused otherwise: int8, [N] row scales (weight = code * scale);
   * float8_e4m3fn, [1] the matrix's scale (x is then quantized per row too; native/src/kiln/fp8.h).
   * q8_0 weights carry their scales in their blocks and take none.
   */
  scales?: Float32Array;
  /** [N] */
  bias?: Float32Array;
  /** bfloat16 weights only: round x to bfloat16 first, as linears with attr bf16Inputs do (default false). */
  bf16Activations?: boolean;
  /**
   * int8 weights only, how x is multiplied (decision 0017): 'float' keeps it float32 (weight-only);
   * 'int8' quantizes each row to int8 codes with one scale; 'int8x2' adds a second row of codes for the
   * rounding error (about 15 bits); both multiply codes in integers (VNNI on avx512_bf16, the scalar
   * reference on other sets); 'adaptive' makes the second row of codes only for rows whose max |x| exceeds
   * 6 times their RMS. 'auto' (default) is 'int8x2' on avx512_bf16 for two rows or more, else
   * 'float'. KILN_CPU_INT8_ACTIVATIONS sets the same for engines.
   */
  int8Activations?: 'auto' | 'float' | 'int8' | 'int8x2' | 'adaptive';
}

/** linearInt4Kernel's arguments: an int4 matrix [N, K] in the engine layout (decision 0014). */
export interface LinearInt4Args extends KernelRunOptions {
  /** [rows, K] with row stride xStride. */
  x: Float32Array;
  rows: number;
  K: number;
  N: number;
  /** Input features per scale: a multiple of 32 dividing K. */
  groupSize: number;
  xStride?: number;
  yStride?: number;
  /** [N * K / 2]: each row's 32-element blocks as 16 bytes, element j in the low nibble of byte j, element j + 16 in the high nibble, as code + 8. */
  codes: Uint8Array;
  /** [N * K / groupSize] bfloat16 bits, row-major: weight = code * scale[n, k / groupSize]. */
  scales: Uint16Array;
  /** [N] */
  bias?: Float32Array;
  /** Place codes and scales at an odd address (default false). */
  misalign?: boolean;
  /** W4A16: keep x float32 (dequantize-then-multiply) instead of quantizing it to int8 blocks (default false). */
  floatActivations?: boolean;
}

export interface RmsNormArgs extends KernelRunOptions {
  x: Float32Array;
  rows: number;
  H: number;
  xStride?: number;
  yStride?: number;
  /** [H] */
  weight: Float32Array | Uint16Array;
  weightDtype: KernelWeightDType;
  eps: number;
  /** 0 (default) for LLaMA, 1 for Gemma's (1 + w). */
  weightOffset?: number;
}

export interface BinaryArgs extends KernelRunOptions {
  a: Float32Array;
  b: Float32Array;
  rows: number;
  cols: number;
  aStride?: number;
  bStride?: number;
  outStride?: number;
}

export interface SiluArgs extends KernelRunOptions {
  a: Float32Array;
  rows: number;
  cols: number;
  aStride?: number;
  outStride?: number;
}

export interface SwigluArgs extends KernelRunOptions {
  gate: Float32Array;
  up: Float32Array;
  rows: number;
  cols: number;
  gateStride?: number;
  upStride?: number;
  outStride?: number;
}

export interface RopeArgs extends KernelRunOptions {
  /** [numTokens, numHeads * headDim] with row stride xStride. */
  x: Float32Array;
  numTokens: number;
  xStride?: number;
  yStride?: number;
  /** [numTokens] */
  positions: Int32Array;
  numHeads: number;
  headDim: number;
  /** Even, at most headDim. */
  rotaryDim: number;
  /** false (default): pairs (i, i + rotaryDim/2); true: pairs (2i, 2i + 1). */
  interleaved?: boolean;
  /** [rotaryDim / 2] */
  invFreq: Float32Array;
  /** Multiplier of cos and sin (default 1). */
  attentionScaling?: number;
}

export interface AttentionArgs extends KernelRunOptions {
  numTokens: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** [numTokens, numHeads * headDim] */
  q: Float32Array;
  /** [numTokens, numKvHeads * headDim] each; written into the cache before attending. */
  k: Float32Array;
  v: Float32Array;
  qStride?: number;
  kStride?: number;
  vStride?: number;
  outStride?: number;
  /** [numTokens] position of each token in its sequence. */
  positions: Int32Array;
  /** [numTokens] index into blockTables of each token's sequence. */
  tokenSeq: Int32Array;
  /** One block table per sequence: block ids of positions [i * tokensPerBlock, (i + 1) * tokensPerBlock). */
  blockTables: Int32Array[];
  tokensPerBlock: number;
  /** Layers in the pool (default 1) and the layer this call uses (default 0). */
  numLayers?: number;
  layer?: number;
  /**
   * The paged KV cache (layout in native/src/kiln/kernels/step.h), a whole number of blocks of
   * numLayers * 2 * tokensPerBlock * numKvHeads * headDim floats. The call writes this step's K and V
   * into it, so a later call (a decode step) sees them.
   */
  kvPool: Float32Array;
  scale: number;
  /** 0 (default): attend to every earlier position; w > 0: only the last w positions, self included. */
  slidingWindow?: number;
  /** > 0: scores become softcap * tanh(score / softcap) after scaling (Gemma 2); 0 (default) off. */
  softcap?: number;
  /** [numHeads]: adds slope[h] * keyPosition to each scaled score (BLOOM's ALiBi). */
  alibiSlopes?: Float32Array;
}

export interface LayerNormArgs extends KernelRunOptions {
  x: Float32Array;
  rows: number;
  H: number;
  xStride?: number;
  yStride?: number;
  /** [H] */
  weight: Float32Array | Uint16Array;
  weightDtype: KernelWeightDType;
  /** [H], optional. */
  bias?: Float32Array;
  eps: number;
}

export interface GeluArgs extends SiluArgs {
  /** 'none' (default): exact erf form; 'tanh': the tanh approximation. */
  approximate?: 'none' | 'tanh';
}

export interface GegluArgs extends SwigluArgs {
  approximate?: 'none' | 'tanh';
}

export interface SoftcapArgs extends SiluArgs {
  /** > 0 */
  cap: number;
}

export interface PositionEmbeddingArgs extends KernelRunOptions {
  /** [numTokens]; positions[t] + offset must be a row of the table (else a RangeError). */
  positions: Int32Array;
  /** [rows, hidden] */
  table: Float32Array | Uint16Array;
  tableDtype: KernelWeightDType;
  hidden: number;
  offset?: number;
  outStride?: number;
}

export interface MoeArgs extends KernelRunOptions {
  /** [rows, H] */
  x: Float32Array;
  rows: number;
  H: number;
  /** Each expert's intermediate size. */
  I: number;
  numExperts: number;
  topK: number;
  normalizeTopK?: boolean;
  xStride?: number;
  outStride?: number;
  /** [numExperts, H] */
  router: Float32Array | Uint16Array;
  routerDtype: KernelWeightDType;
  /** gate, up [numExperts * I, H] and down [numExperts * H, I], all of expertDtype. */
  gate: Float32Array | Uint16Array;
  up: Float32Array | Uint16Array;
  down: Float32Array | Uint16Array;
  expertDtype: KernelWeightDType;
}

export interface GatherRowsArgs extends KernelRunOptions {
  x: Float32Array;
  xStride?: number;
  /** Row indices into x. */
  rows: Int32Array;
  cols: number;
  outStride?: number;
}

// ---------------------------------------------------------------------------------------------------
// Sampling (native/src/addon/sampling_testing.cpp over native/src/kiln/sampling/sampling.h).

/** One request's sampling controls, as kiln::sampling::SamplingParams; every field defaults to off. */
export interface NativeSamplingParams {
  /** Default 0 (greedy). */
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repetitionPenalty?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  noRepeatNgramSize?: number;
  minTokens?: number;
  /** -1 (default): no end id. */
  endId?: number;
  badWords?: Int32Array[];
  /** Sparse bias: logits[ids[i]] += values[i]. */
  embeddingBias?: { ids: Int32Array; values: Float32Array };
  /** A number up to 2^53 - 1 or a bigint up to 2^64 - 1 (default 0). */
  seed?: number | bigint;
  /** Top-N logprobs to return, 0 to 20. */
  logprobs?: number;
}

export interface SamplingSequenceArgs {
  /** The prompt then the generated ids (default none). */
  tokens?: Int32Array;
  /** How many of `tokens` are the prompt (default: all of them). */
  numPromptTokens?: number;
  params: NativeSamplingParams;
  /** Allowed-token bitmask applied before the processors (ceil(vocab / 32) words; default: every token). */
  allowed?: Uint32Array;
}

export interface ProcessLogitsArgs extends SamplingSequenceArgs {
  /** [vocab] raw logits (copied, not modified). */
  logits: Float32Array;
}

export interface ProcessLogitsResult {
  /** The processed scores, -Infinity where masked. */
  scores: Float32Array;
  /** The distribution the next token is drawn from (one-hot at the greedy token for temperature 0). */
  probs: Float32Array;
  /** log-softmax of `scores`. */
  logprobs: Float32Array;
}

export interface SampleRowArgs extends SamplingSequenceArgs {
  /** RNG counter: tokens generated by the sequence before this step. */
  step: number;
  /** RNG stream: independent samples of one request (default 0). */
  sequenceIndex?: number;
}

export interface SampleRowsArgs {
  /** [rows.length * vocab] raw logits (copied, not modified). */
  logits: Float32Array;
  vocab: number;
  rows: SampleRowArgs[];
  /** Threads for the batch, the calling thread included (default 1). */
  threads?: number;
  /** "cuda": the CUDA backend's device sampler draws the rows (a CUDA build on a machine with a GPU). Default "cpu". */
  device?: 'cpu' | 'cuda';
}

export interface SampleRowsResult {
  /** [rows] the chosen tokens. */
  tokens: Int32Array;
  /** [rows] log-probability of each chosen token. */
  logprobs: Float32Array;
  /** Per row, the params.logprobs most likely tokens, most likely first. */
  top: Array<{ ids: Int32Array; logprobs: Float32Array }>;
}

export interface NativeTesting {
  /** The best instruction set this CPU supports for the kernels. */
  /** The best kernel set this CPU runs (see KernelIsa). */
  cpuIsa(): KernelIsa;
  /** Round to nearest even, NaN kept quiet. */
  f32ToBf16(values: Float32Array): Uint16Array;
  /** IEEE half, round to nearest even, with subnormals, inf and NaN. */
  f32ToF16(values: Float32Array): Uint16Array;
  bf16ToF32(bits: Uint16Array): Float32Array;
  f16ToF32(bits: Uint16Array): Float32Array;

  /** [numTokens, outStride]: out[t] = table[ids[t]] * scale. */
  embedding(args: EmbeddingArgs): Float32Array;
  /** [rows, yStride]: y = x w^T (+ bias). */
  linear(args: LinearArgs): Float32Array;
  /** [rows, yStride]: y = quantize8(x) . int4 w^T per 32-element block (+ bias), or x dequantize(int4 w)^T with floatActivations. */
  linearInt4(args: LinearInt4Args): Float32Array;
  /** [rows, yStride]: x / sqrt(mean(x^2) + eps) * (weightOffset + w). */
  rmsNorm(args: RmsNormArgs): Float32Array;
  /** [rows, outStride]: a + b. */
  add(args: BinaryArgs): Float32Array;
  /** [rows, outStride]: a * b. */
  mul(args: BinaryArgs): Float32Array;
  /** [rows, outStride]: a / (1 + e^-a). */
  silu(args: SiluArgs): Float32Array;
  /** [rows, outStride]: silu(gate) * up. */
  swiglu(args: SwigluArgs): Float32Array;
  /** [numTokens, yStride]: x rotated per head (see ropeKernel in kernels.h). */
  rope(args: RopeArgs): Float32Array;
  /** [numTokens, outStride]: paged causal attention; mutates args.kvPool. */
  attention(args: AttentionArgs): Float32Array;
  /** [rows.length, outStride]: out[i] = x[rows[i]]. */
  gatherRows(args: GatherRowsArgs): Float32Array;
  /** [rows, yStride]: (x - mean) / sqrt(var + eps) * w (+ bias). */
  layerNorm(args: LayerNormArgs): Float32Array;
  /** [rows, outStride]: gelu(a). */
  gelu(args: GeluArgs): Float32Array;
  /** [rows, outStride]: gelu(gate) * up. */
  geglu(args: GegluArgs): Float32Array;
  /** [rows, outStride]: max(a, 0). */
  relu(args: SiluArgs): Float32Array;
  /** [rows, outStride]: cap * tanh(a / cap). */
  softcap(args: SoftcapArgs): Float32Array;
  /** [positions.length, outStride]: out[t] = table[positions[t] + offset]. */
  positionEmbedding(args: PositionEmbeddingArgs): Float32Array;
  /** [rows, outStride]: Mixtral's top-k routed SwiGLU experts (see moeKernel in kernels.h). */
  moe(args: MoeArgs): Float32Array;
  /** Philox4x32-10 of a 4-word counter and a 2-word key. */
  philox4x32(counter: Uint32Array, key: Uint32Array): Uint32Array;
  /** The sampler's uniform draw in [0, 1) for (seed, step, sequenceIndex). */
  samplingUniform(args: { seed: number | bigint; step: number; sequenceIndex?: number }): number;
  /** Every logits processor, in transformers' order, on one row. */
  processLogits(args: ProcessLogitsArgs): ProcessLogitsResult;
  /** The batched entry point: process and sample one row per sequence. */
  sampleRows(args: SampleRowsArgs): SampleRowsResult;
}
