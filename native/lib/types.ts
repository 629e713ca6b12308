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
  /**
   * Refuse NaN and infinite source values, naming the tensor, its source and the element (nothing is
   * left at `path`). Default false; `convertCheckpoint` sets it unless `allowNonFinite`.
   */
  rejectNonFinite?: boolean;
}

/** GGUF metadata value types (gguf.md `gguf_metadata_value_type`). */
export type GgufValueType =
  | 'UINT8' | 'INT8' | 'UINT16' | 'INT16' | 'UINT32' | 'INT32' | 'FLOAT32' | 'BOOL' | 'STRING' | 'UINT64' | 'INT64' | 'FLOAT64';

/** One metadata entry of a GGUF file. 64-bit integers past 2^53 are refused by the reader. */
export type GgufMetadataEntry =
  | { key: string; type: Exclude<GgufValueType, 'STRING' | 'BOOL'>; value: number }
  | { key: string; type: 'BOOL'; value: boolean }
  | { key: string; type: 'STRING'; value: string }
  | { key: string; type: 'ARRAY'; itemType: 'STRING'; value: string[] }
  | { key: string; type: 'ARRAY'; itemType: 'BOOL'; value: boolean[] }
  | { key: string; type: 'ARRAY'; itemType: Exclude<GgufValueType, 'STRING' | 'BOOL'>; value: number[] };

/** ggml tensor types Kiln reads from GGUF files (all of them) and writes (F32, F16, BF16, Q8_0, Q4_0). */
export type GgmlTypeName = 'F32' | 'F16' | 'BF16' | 'Q8_0' | 'Q4_0' | 'Q4_1' | 'Q4_K' | 'Q5_K' | 'Q6_K';

export interface GgufTensorInfo {
  name: string;
  type: GgmlTypeName;
  /** ggml's ne[]: the innermost (contiguous) dimension first. */
  dims: number[];
  /** Row-major shape (dims reversed), as safetensors writes it. */
  shape: number[];
  /** Absolute byte offset of the tensor's data in the file. */
  byteOffset: number;
  byteLength: number;
}

export interface GgufInfo {
  path: string;
  fileSize: number;
  version: number;
  alignment: number;
  /** In file order; keys are untrusted and kept as plain strings. */
  metadata: GgufMetadataEntry[];
  /** In file order. */
  tensors: GgufTensorInfo[];
}

export interface WriteSafetensorsFromGgufOptions {
  /** The GGUF file to read. */
  gguf: string;
  /** The safetensors file to write (temporary file renamed into place: never half-written). */
  path: string;
  tensors: Array<{
    /** Name in the output. */
    name: string;
    /** Name in the GGUF file. */
    tensor: string;
    dtype: WeightDType;
    /** Undo llama.cpp's q/k rope row permutation for this many heads. Default 0: rows as stored. */
    unpermuteHeads?: number;
    /** Added to every dequantized value (Gemma's norm weights: -1). Default 0. */
    valueOffset?: number;
    /** Write the 2-D tensor transposed (GPT-2's Conv1D weights, [in, out] in transformers). Default false. */
    transpose?: boolean;
  }>;
  /** Refuse NaN and infinite dequantized values, naming the tensor. Default false. */
  rejectNonFinite?: boolean;
}

export interface WriteGgufOptions {
  /** Output path; written to a temporary file then renamed. */
  path: string;
  metadata: GgufMetadataEntry[];
  tensors: Array<{
    name: string;
    type: 'F32' | 'F16' | 'BF16' | 'Q8_0' | 'Q4_0';
    /**
     * The safetensors tensors (F32, F16 or BF16) the data comes from, concatenated along dimension 0
     * (llama.cpp fuses what Kiln keeps apart: Phi-3's q/k/v); the same trailing dimensions each.
     */
    sources: Array<{ file: string; tensor: string }>;
    /** Apply llama.cpp's q/k rope row permutation for this many heads. Default 0. */
    permuteHeads?: number;
    /** Added to every value before the cast or quantization (Gemma's norm weights: +1). Default 0. */
    valueOffset?: number;
  }>;
  /** general.alignment of the data; default 32 (ggml's). The caller writes the key when it differs. */
  alignment?: number;
}

/** Per tensor, what quantizing cost: RMS of the weights, RMS and largest absolute error. */
export interface GgufTensorError {
  name: string;
  rms: number;
  rmsError: number;
  maxAbsError: number;
}

export interface WriteGgufResult {
  fileSize: number;
  errors: GgufTensorError[];
}

/** A weight to pack into an engine: from checkpoint tensors, or a constant the builder computed. */
/**
 * An engine weight's storage type: a WeightDType, or 'int8' (weight-only quantization, linear matrices
 * only): N * K int8 codes then N float32 row scales, quantized by the writer from the float sources; or
 * 'float8_e4m3fn' (FP8 linears, matrices only): N * K e4m3 codes then one float32 scale for the matrix.
 * 'int4' (likewise): N * K / 2 bytes of packed codes then N * K / groupSize bfloat16 scales, `groupSize`
 * (a multiple of 32 dividing K) required and equal to the header entry's (decision 0014).
 * 'q8_0' (linear matrices with K a multiple of 32): llama.cpp's Q8_0 blocks (float16 scale + 32 int8
 * codes), lossless for the values of GGUF Q8_0 and Q4_0 tensors, whose linears quantize their input to
 * the same blocks as llama.cpp's CPU does (decision 0016).
 */
export type EngineWeightDType = WeightDType | 'int8' | 'int4' | 'float8_e4m3fn' | 'q8_0';

export type EngineWeightSpec =
  | { name: string; dtype: EngineWeightDType; shape: number[]; sources: TensorSource[]; groupSize?: number }
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

/** How far one quantized weight is from its float values. */
export interface QuantizationErrorReport {
  name: string;
  /** Largest |dequantized - float| of an element, relative to the largest |float| of its row. */
  maxRelativeError: number;
  /** sqrt(sum (dequantized - float)^2 / sum float^2) over the weight. */
  rmsRelativeError: number;
  /** q8_0 weights: blocks of 32 kept exactly (a GGUF Q8_0/Q4_0 block's values), of `blocks`. */
  losslessBlocks?: number;
  blocks?: number;
}

export interface WriteEngineResult {
  /** XXH64 of the file, as 16 lowercase hex digits (also stored in its trailer). */
  checksum: string;
  fileSize: number;
  /** One entry per int8, int4 or q8_0 weight, in file order (empty without quantization). */
  quantization: QuantizationErrorReport[];
}

/** What `inspectEngine` found in a `.engine` file that passed the container's structural checks. */
export interface EngineInspection {
  /** XXH64 of the file (its trailer), 16 lowercase hex digits. */
  checksum: string;
  /** The header JSON exactly as stored. */
  headerJson: string;
  weights: { name: string; dtype: WeightDType; shape: number[]; offset: number; byteLength: number }[];
}

/**
 * The CPU kernel sets, each a superset of the one before: 'avx2' (AVX2, FMA, F16C), 'avx512' (+ AVX-512
 * F/BW/VL/DQ), 'avx512_bf16' (+ AVX512_BF16 and AVX512_VNNI). Engines are built for 'avx2' or 'generic'
 * (their minimum); the set is chosen at load, capped by the KILN_CPU_ISA environment variable.
 */
export type KernelIsa = 'generic' | 'avx2' | 'avx512' | 'avx512_bf16';

export interface CpuInfo {
  /** What an engine built here records as its minimum instruction set. */
  isa: 'avx2' | 'generic';
  /** The best kernel set this CPU runs engines with (before any KILN_CPU_ISA cap). */
  kernels: KernelIsa;
  hardwareConcurrency: number;
}

/** One CUDA device as the CUDA runtime reports it (`cudaGetDeviceProperties`, `cudaMemGetInfo`). */
export interface CudaDeviceInfo {
  /** The CUDA device ordinal (0-based, after CUDA_VISIBLE_DEVICES). */
  index: number;
  /** The device's name, e.g. "NVIDIA H200". */
  name: string;
  /** "major.minor", e.g. "9.0" (sm_90). */
  computeCapability: string;
  /** Device memory in bytes. */
  totalBytes: number;
  /** Device memory free when asked, in bytes. */
  freeBytes: number;
}

/** What `cudaInfo()` found: whether this build has the CUDA backend, and the devices it can see. */
export interface CudaInfo {
  /** False when the addon was built without a CUDA toolkit (then `devices` is empty). */
  compiled: boolean;
  /** Empty without CUDA, without a driver or without a device. */
  devices: CudaDeviceInfo[];
  /** Why there are no devices: the CUDA runtime's message (no driver, no device), or that CUDA was not compiled in. */
  error?: string;
}

/**
 * How the executor admits requests when the KV cache is short (TensorRT-LLM's CapacitySchedulerPolicy).
 * - `guaranteedNoEvict`: a request is admitted only when the blocks of its prompt and of all its
 *   `maxTokens` can be taken, so it never waits for memory once running.
 * - `maxUtilization`: a request is admitted when its prompt's blocks can be taken; when a running request
 *   needs a block and none is left, the most recently admitted one is preempted (blocks freed) and later
 *   resumed by recomputing its prompt and generated tokens. Greedy outputs are the same either way.
 */
export type CapacitySchedulerPolicy = 'guaranteedNoEvict' | 'maxUtilization';

export interface LoadEngineOptions {
  /** Threads for the kernels. Default: hardware concurrency. Range: 1 to 1024. */
  numThreads?: number;
  /**
   * KV cache capacity in tokens (rounded up to whole blocks of the engine's tokensPerBlock). Range: >= 1.
   * When several of kvCacheTokens, kvCacheBytes and kvCacheMemoryFraction are given, the smallest
   * capacity wins (and may pass maxBatchSize * maxSeqLen: the extra blocks keep reusable prefixes).
   * Default (none given): maxBatchSize * maxSeqLen tokens; on a cuda engine at most 0.9 of the device
   * memory free once weights and activations are loaded.
   */
  kvCacheTokens?: number;
  /**
   * KV cache capacity in bytes: K and V of every layer, in the engine's activation dtype (float32 on
   * the CPU; `activationDType` of a cuda engine). Range: >= 1. Default: not set (no byte limit).
   */
  kvCacheBytes?: number;
  /**
   * KV cache capacity as a fraction of the memory available once the engine's weights and activations
   * are in place: on the CPU the host's MemAvailable; on a cuda engine the device memory then free
   * (TensorRT-LLM's kv_cache_free_gpu_mem_fraction). Range: (0, 1]. Default: not set (see
   * kvCacheTokens for the capacity when none of the three is given).
   */
  kvCacheMemoryFraction?: number;
  /** Run the portable kernels even where AVX2 is available (tests). Default false. */
  forceGeneric?: boolean;
  /** Most sequences in one step. Default: the engine's maxBatchSize. Range: 1 to that. */
  maxBatchSize?: number;
  /**
   * Most packed tokens in one step (prefill chunks plus decode tokens); longer prompts are prefilled over
   * several steps. Default: the engine's maxNumTokens. Range: 1 to that.
   */
  maxNumTokens?: number;
  /** Default `guaranteedNoEvict`. */
  capacitySchedulerPolicy?: CapacitySchedulerPolicy;
  /**
   * Reuse the KV blocks of shared prompt prefixes (full blocks whose KV was computed, matched by a
   * chained hash of their tokens; cached free blocks are evicted least recently used first). Requests
   * that return context logits never reuse. Default true; false turns it off.
   */
  enableBlockReuse?: boolean;
}

export interface NativeEngineInfo {
  formatVersion: number;
  /** The backend the engine was built for and runs on (the header's target.backend). */
  backend: 'cpu' | 'cuda';
  /** The kernels' instruction set: on the CPU "avx2" or "generic"; on cuda the SM architecture, e.g. "sm_90". */
  isa: string;
  /** cuda only: the compute capability the engine was built for, "major.minor" (e.g. "9.0"). */
  computeCapability?: string;
  /** The dtype of activations and of the KV cache: always float32 on the CPU; the header's target.activationDType on cuda. */
  activationDType: WeightDType;
  /** Where it runs, for people: e.g. "NVIDIA H200 (compute capability 9.0, 139.8 GiB)" or "cpu (avx2, 2 threads)". */
  device: string;
  /** Bytes of weights resident where the kernels read them (device memory on cuda; the file mapping on the CPU). */
  weightBytes: number;
  /** Bytes of the KV cache as allocated (K and V of every layer, in activationDType). */
  kvCacheBytes: number;
  /** KV cache capacity in tokens: blocks x tokensPerBlock. */
  kvCacheTokens: number;
  maxBatchSize: number;
  maxSeqLen: number;
  maxNumTokens: number;
  /** Most logit rows one step can produce: maxNumTokens when built with gatherContextLogits, else maxBatchSize. */
  maxLogitRows: number;
  /** Most beams of a beam search request: the header's limits.maxBeamWidth (1 when absent). */
  maxBeamWidth: number;
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
  /**
   * Seeds the request's sampling (Philox counter (seed, step, sequenceIndex)). Default 0. Range: 0 to
   * 2^53 - 1 as a number, or a bigint below 2^64.
   */
  seed?: number | bigint;
}

/**
 * The native sampler's controls (kiln/sampling/sampling.h), as @kiln/runtime's Executor resolves them
 * from a validated SamplingConfig. Every field defaults to "off" (greedy decoding of the raw logits).
 */
export interface NativeSamplingFields {
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repetitionPenalty?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  noRepeatNgramSize?: number;
  minTokens?: number;
  /** Token-id sequences that may never be generated (strings are tokenized by the runtime). At most 1024, each 1 to 256 ids. */
  badWords?: Int32Array[];
  /** Token-id stop sequences: the request ends ("stop") when its output ends with one; the event's stopLength tells how many ids matched. At most 64. */
  stopTokenSequences?: Int32Array[];
  /** Sparse embedding bias: logits[biasIds[i]] += biasValues[i]. Given together, of one length. */
  biasIds?: Int32Array;
  biasValues?: Float32Array;
  /** Top-N logprobs per generated token, 0 to 20 (the chosen token's come with any N > 0). Default 0. */
  logprobs?: number;
  /** The Philox stream: independent samples of one prompt and seed use 0, 1, ... Default 0. */
  sequenceIndex?: number;
  /** Beams (1: no beam search). Default 1. Range: 1 to the engine's maxBeamWidth. */
  beamWidth?: number;
  /** Beam search: sequences returned in the last event's `sequences`, best first. Default 1; at most beamWidth. */
  numReturnSequences?: number;
  /** Beam search: finished scores are sum of logprobs / length ** lengthPenalty. Default 1. */
  lengthPenalty?: number;
  /** Beam search: transformers' early_stopping. Default false. */
  earlyStopping?: boolean | 'never';
  /**
   * Constrained decoding (enqueue only): the allowed-token bitmask of the first generated token, bit i
   * of word i >> 5 set when token i may be chosen, ceil(vocabSize / 32) words (xgrammar's layout). The
   * request then waits, after each token, for the next mask from setTokenMasks. Default: unconstrained.
   */
  tokenMask?: Uint32Array;
}

export type NativeFinishReason = 'length' | 'stop';

/** The same fields as a generate request; `enqueue` returns its id. */
export type NativeExecutorRequest = NativeGenerateRequest & NativeSamplingFields;

/** Log-probabilities of one generated token (the shape of @kiln/sampling's referenceLogprobs). */
export interface NativeTokenLogprobs {
  /** The chosen token's, under the distribution it was drawn from (after every control). */
  logprob: number;
  /** The `logprobs` most likely tokens, best first (lowest id first on ties). */
  top: { token: number; logprob: number }[];
}

/** One sequence of a beam search request, best first. */
export interface NativeSequence {
  outputIds: Int32Array;
  finishReason: NativeFinishReason;
  /** transformers' sequences_scores: sum of log-probabilities / generated length ** lengthPenalty. */
  score: number;
}

/** How an executor request ended: `cancelled` by cancel() or shutdown({cancel: true}), `error` with a message. */
export type NativeExecutorFinishReason = NativeFinishReason | 'cancelled' | 'error';

/** Per-request timing and KV figures, reported when the request finishes. */
export interface NativeRequestStats {
  /** Enqueue to first admission into a step, milliseconds. */
  queueTimeMs: number;
  /** Enqueue to the first generated token, milliseconds (0 when none was generated). */
  timeToFirstTokenMs: number;
  /** Mean time between generated tokens after the first, milliseconds (0 with fewer than two). */
  timePerOutputTokenMs: number;
  /** Enqueue to finish, milliseconds. */
  totalTimeMs: number;
  numPromptTokens: number;
  numOutputTokens: number;
  /** Prompt KV blocks taken from the prefix cache instead of computed. */
  reusedBlocks: number;
  /** Times it was preempted (maxUtilization) and later resumed. */
  preemptions: number;
}

/** One executor iteration (one packed step). */
export interface NativeIterationStats {
  /** 1-based iteration counter. */
  iteration: number;
  /** Milliseconds since the executor started. */
  timestampMs: number;
  /** Scheduling, the step and sampling, milliseconds. */
  iterationMs: number;
  /** Requests with tokens in this step. */
  activeRequests: number;
  /** Requests still queued after this step's admissions. */
  waitingRequests: number;
  contextRequests: number;
  generationRequests: number;
  numTokens: number;
  numContextTokens: number;
  numGenerationTokens: number;
  /** Requests preempted in this iteration (maxUtilization). */
  preempted: number;
  kvBlocksTotal: number;
  /** Blocks referenced by a request. */
  kvBlocksUsed: number;
  /** Blocks a request could take now, including kvBlocksCached. */
  kvBlocksFree: number;
  /** Free blocks that still hold a reusable prefix. */
  kvBlocksCached: number;
}

/** What one request produced in one iteration. */
export interface NativeRequestEvent {
  id: number;
  /** Tokens generated in this iteration (usually one; none for a prefill chunk or a cancellation). */
  outputIds: Int32Array;
  /** Set on the request's last event. */
  finishReason?: NativeExecutorFinishReason;
  /** With finishReason "error". */
  error?: string;
  /** [promptLength, vocab], once, with the first token, when asked for. */
  contextLogits?: Float32Array;
  /** [outputIds.length, vocab], when asked for. */
  generationLogits?: Float32Array;
  /** One per output id, when the request asked for logprobs. */
  logprobs?: NativeTokenLogprobs[];
  /** With finishReason "stop" by a stop token sequence: how many trailing output ids matched it. */
  stopLength?: number;
  /** Beam search, on the last event: the best numReturnSequences sequences (outputIds is the first's). */
  sequences?: NativeSequence[];
  /** Beam search with a tokenMask, while it goes on: each running beam's generated ids; setTokenMasks takes one mask per beam in this order. */
  beams?: Int32Array[];
  /** Set with finishReason. */
  stats?: NativeRequestStats;
}

/** Everything of one iteration: the listener is called once per iteration, never per token. */
export interface NativeIterationEvents {
  stats: NativeIterationStats;
  events: NativeRequestEvent[];
}

export interface NativeExecutorStats {
  iterations: number;
  waitingRequests: number;
  activeRequests: number;
  kvBlocksTotal: number;
  kvBlocksUsed: number;
  kvBlocksFree: number;
  kvBlocksCached: number;
  tokensPerBlock: number;
  /** The executor's effective limits. */
  maxBatchSize: number;
  maxNumTokens: number;
  /** The most recent iterations (up to 256), oldest first. */
  recentIterations: NativeIterationStats[];
}

export interface NativeGenerateResult {
  /** Generated tokens only (not the prompt). */
  outputIds: Int32Array;
  finishReason: NativeFinishReason;
  /** [promptLength, vocab], row-major, when asked for. */
  contextLogits?: Float32Array;
  /** [outputIds.length, vocab], row k chose output token k, when asked for. */
  generationLogits?: Float32Array;
  /** Timing and KV figures of the request. */
  stats?: NativeRequestStats;
}

/**
 * A loaded engine and its executor: one native thread that batches every request in flight
 * (in-flight batching: prefill chunks and decode tokens packed into one step, per-request KV blocks).
 */
export interface NativeEngine {
  readonly info: NativeEngineInfo;
  /**
   * Runs one request through the executor (batched with any others in flight), greedy. `onToken` is
   * called on the JavaScript thread for each generated token, in order, before the promise resolves.
   */
  generate(request: NativeGenerateRequest, onToken?: (tokenId: number) => void): Promise<NativeGenerateResult>;
  /**
   * Queues a request; its events go to the listener of setEventListener. Throws (synchronously) on an
   * invalid request, naming the field, or after shutdown/dispose.
   */
  enqueue(request: NativeExecutorRequest): number;
  /** Cancels a request: it leaves at the next iteration with finishReason "cancelled". Unknown ids are ignored. */
  cancel(id: number): void;
  /**
   * Flow control: a paused request keeps its KV blocks but takes no step until it is resumed
   * (`paused` false). Unknown or finished ids are ignored.
   */
  setPaused(id: number, paused: boolean): void;
  /**
   * Constrained decoding: the allowed-token masks of a tokenMask request's next step, one (or one per
   * beam of its last event's `beams`), each ceil(vocabSize / 32) words. A wrong size or count, or a mask
   * that allows nothing, ends the request with finishReason "error". Unknown or finished ids are ignored.
   */
  setTokenMasks(id: number, masks: Uint32Array[]): void;
  /**
   * The listener of enqueue()d requests' events: called on the JavaScript thread at most once per
   * executor iteration, with all that iteration's events. `undefined` removes it (events are dropped).
   */
  setEventListener(listener: ((events: NativeIterationEvents) => void) | undefined): void;
  /** A snapshot of the executor's state and its recent iterations. */
  stats(): NativeExecutorStats;
  /**
   * Stops accepting requests, finishes the queued and running ones (or cancels them with
   * `{cancel: true}`), and joins the executor's thread. Resolves after the last events were delivered.
   */
  shutdown(options?: { cancel?: boolean }): Promise<void>;
  /** shutdown() without waiting, then frees the mapping, the KV cache and the activations once idle. Idempotent; later calls reject. */
  dispose(): void;
  /** This engine file's rank in a tensor/pipeline-parallel engine (tpSize = ppSize = 1, rank 0 otherwise). */
  readonly mapping: NativeParallelMapping;
  /**
   * Ranks other than 0 of a tp/pp engine: replays rank 0's steps on a native thread until rank 0's engine
   * is disposed, then resolves. Rejects on rank 0 or a single-rank engine. A failure while following ends
   * every rank of the job (MPI_Abort), naming this rank.
   */
  follow(): Promise<void>;
}

/** A rank of a tensor/pipeline-parallel engine: rank = ppRank * tpSize + tpRank. */
export interface NativeParallelMapping {
  tpSize: number;
  ppSize: number;
  rank: number;
}

/** Where mpirun put this process, read from its environment (no MPI call). */
export interface WorldInfo {
  /** 0 when not launched by mpirun. */
  rank: number;
  /** 1 when not launched by mpirun. */
  size: number;
  launchedByMpirun: boolean;
  /** Whether this build has the MPI communicator (KILN_MPI). */
  mpiCompiled: boolean;
}

export interface NativeAddon {
  cpuInfo(): CpuInfo;
  /**
   * The CUDA devices this build can use. Synchronous and cheap (milliseconds once the driver is
   * loaded); never throws for a missing driver or device: `compiled` is false without the CUDA backend,
   * and `error` carries the CUDA runtime's message when it finds no device.
   */
  cudaInfo(): CudaInfo;
  readSafetensors(path: string): Promise<SafetensorsInfo>;
  writeSafetensors(options: WriteSafetensorsOptions): Promise<void>;
  /** Validates a GGUF file's structure (bounded: docs/hardening.md) on a native thread and describes it. */
  readGguf(path: string): Promise<GgufInfo>;
  /** Dequantizes GGUF tensors into a safetensors file, on a native thread (the GGUF import). */
  writeSafetensorsFromGguf(options: WriteSafetensorsFromGgufOptions): Promise<void>;
  /** Writes a GGUF file from safetensors tensors, quantizing on a native thread (the GGUF export). */
  writeGguf(options: WriteGgufOptions): Promise<WriteGgufResult>;
  writeEngine(options: WriteEngineOptions): Promise<WriteEngineResult>;
  /**
   * Validates and loads a `.engine` file on a native thread, placing its weights and KV cache on the
   * backend its header's target names. Rejects with a message that starts with the path, also when this
   * build or machine cannot run that target (a cuda engine on an addon built without CUDA, or with no
   * device of its compute capability).
   */
  loadEngine(path: string, options?: LoadEngineOptions): Promise<NativeEngine>;
  /** This process's rank and world size under mpirun (rank 0 of 1 otherwise). */
  worldInfo(): WorldInfo;
  /**
   * For tests: opens a `.engine` file with every structural check the loader does (magic, format
   * version, header length, checksum, header JSON, weights table), on a native thread, and reports what
   * it found without building a runtime. Rejects with the loader's error message.
   */
  inspectEngine(path: string): Promise<EngineInspection>;
  /**
   * Direct access to single kernels, for the tests that compare them with scalar references. Only in
   * builds with the test bindings (KILN_TESTING=ON: the repository's `npm ci`); not in the prebuilt
   * packages or `kiln-build-native`'s builds.
   */
  testing?: import('./testing-types').NativeTesting;
}
