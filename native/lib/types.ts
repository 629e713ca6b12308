// The whole surface of the native addon (native/src/addon/*.cpp), written by hand. Nothing else in Kiln
// touches the `.node` file: `loadNative()` in ./index.ts is the one place it is loaded.
//
// Conventions: every call that reads or writes weights, or runs a model, returns a Promise and does its
// work on a native thread; failures reject with an Error whose message names the file, key or value at
// fault. Sizes and offsets are JavaScript numbers (safe up to 2^53 bytes).

/** Weight storage types an engine or a Kiln checkpoint may hold. */
export type WeightDType = 'float32' | 'float16' | 'bfloat16';

/** One tensor of a safetensors file, as its validated header describes it. */
export interface SafetensorsTensorInfo {
  name: string;
  /** The safetensors dtype code as written in the file: "F32", "F16", "BF16", "I64", ... */
  dtype: string;
  shape: number[];
  /** Absolute byte offset of the tensor's first byte in the file (8 + header length + data_offsets[0]). */
  byteOffset: number;
  byteLength: number;
}

export interface SafetensorsInfo {
  path: string;
  fileSize: number;
  /** The optional `__metadata__` string map. */
  metadata: Record<string, string>;
  /** In file order (ascending byteOffset). */
  tensors: SafetensorsTensorInfo[];
}

/**
 * Where the bytes of an output tensor come from: a tensor of a safetensors file, optionally transposed
 * (2-D only, applied first), then optionally sliced along dimension 0.
 */
export interface TensorSource {
  file: string;
  tensor: string;
  /** Transpose a 2-D source ([a, b] -> [b, a]) before slicing; for GPT-2 style Conv1D weights. */
  transpose?: boolean;
  /** First row (dimension 0 index) to take; default 0. */
  rowStart?: number;
  /** Number of rows to take; default all rows from rowStart. */
  rowCount?: number;
}

/**
 * An output tensor: its sources are concatenated along dimension 0 in order and cast to `dtype`
 * (any of F32/F16/BF16 in, any WeightDType out; casts round to nearest even). The product of `shape`
 * must equal the number of elements gathered, or the write fails naming the tensor.
 */
export interface TensorWriteSpec {
  name: string;
  dtype: WeightDType;
  shape: number[];
  sources: TensorSource[];
}

export interface WriteSafetensorsOptions {
  /** Output path. Written to `<path>.tmp-<pid>` then renamed: never half-written. */
  path: string;
  metadata?: Record<string, string>;
  tensors: TensorWriteSpec[];
}

/** A weight to pack into an engine: from checkpoint tensors, or a constant the builder computed. */
export type EngineWeightSpec =
  | { name: string; dtype: WeightDType; shape: number[]; sources: TensorSource[] }
  | { name: string; dtype: 'float32'; shape: number[]; data: Float32Array };

export interface WriteEngineOptions {
  /** Output path of the `.engine` file; written to a temporary file then renamed. */
  path: string;
  /**
   * The engine header (docs/engine-format.md) as JSON text. Its `weights` array must list the same
   * weights, in the same order, as `weights` here, with the offsets the builder assigned; the writer
   * checks this and writes each weight at `dataStart + offset`.
   */
  header: string;
  weights: EngineWeightSpec[];
}

export interface WriteEngineResult {
  /** XXH64 of the file, as 16 lowercase hex digits (also stored in its trailer). */
  checksum: string;
  fileSize: number;
}

/** What `inspectEngine` found in a `.engine` file that passed the container's structural checks. */
export interface EngineInspection {
  /** XXH64 of the file (its trailer), 16 lowercase hex digits. */
  checksum: string;
  /** The header JSON exactly as stored. */
  headerJson: string;
  weights: { name: string; dtype: WeightDType; shape: number[]; offset: number; byteLength: number }[];
}

export interface CpuInfo {
  /** The best instruction set the kernels can use here. */
  isa: 'avx2' | 'generic';
  hardwareConcurrency: number;
}

export interface LoadEngineOptions {
  /** Threads for the kernels. Default: hardware concurrency. */
  numThreads?: number;
  /** KV cache capacity in tokens (rounded up to whole blocks). Default: maxBatchSize * maxSeqLen. */
  kvCacheTokens?: number;
  /** Run the portable kernels even where AVX2 is available (tests). Default false. */
  forceGeneric?: boolean;
}

export interface NativeEngineInfo {
  formatVersion: number;
  backend: 'cpu';
  isa: 'avx2' | 'generic';
  maxBatchSize: number;
  maxSeqLen: number;
  maxNumTokens: number;
  /** Most logit rows one step can produce: maxNumTokens when built with gatherContextLogits, else maxBatchSize. */
  maxLogitRows: number;
  vocabSize: number;
  /** The header's `model` object, verbatim (JSON text). */
  modelJson: string;
}

export interface NativeGenerateRequest {
  inputIds: Int32Array;
  /** Number of tokens to generate at most (>= 1). */
  maxTokens: number;
  /** Token that ends generation (it is returned as the last output token); -1 for none. */
  endId: number;
  returnContextLogits: boolean;
  returnGenerationLogits: boolean;
}

export type NativeFinishReason = 'length' | 'stop';

export interface NativeGenerateResult {
  /** Generated tokens only (not the prompt). */
  outputIds: Int32Array;
  finishReason: NativeFinishReason;
  /** [promptLength, vocab], row-major, when asked for. */
  contextLogits?: Float32Array;
  /** [outputIds.length, vocab], row k chose output token k, when asked for. */
  generationLogits?: Float32Array;
}

export interface NativeEngine {
  readonly info: NativeEngineInfo;
  /**
   * Prefill then greedy decode on the runtime's own thread. `onToken` is called on the JavaScript
   * thread for each generated token, in order, before the promise resolves.
   */
  generate(request: NativeGenerateRequest, onToken?: (tokenId: number) => void): Promise<NativeGenerateResult>;
  /** Frees the mapping, the KV cache and the activations. Idempotent; later calls reject. */
  dispose(): void;
}

export interface NativeAddon {
  cpuInfo(): CpuInfo;
  readSafetensors(path: string): Promise<SafetensorsInfo>;
  writeSafetensors(options: WriteSafetensorsOptions): Promise<void>;
  writeEngine(options: WriteEngineOptions): Promise<WriteEngineResult>;
  loadEngine(path: string, options?: LoadEngineOptions): Promise<NativeEngine>;
  /**
   * For tests: opens a `.engine` file with every structural check the loader does (magic, format
   * version, header length, checksum, header JSON, weights table), on a native thread, and reports what
   * it found without building a runtime. Rejects with the loader's error message.
   */
  inspectEngine(path: string): Promise<EngineInspection>;
  /** Direct access to single kernels, for the tests that compare them with scalar references. */
  testing: import('./testing-types').NativeTesting;
}
