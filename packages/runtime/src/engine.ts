import * as path from 'node:path';
import { loadNative, type CapacitySchedulerPolicy, type NativeEngine, type NativeEngineInfo } from '@kiln/native';
import { resolveEndId, validateMaxTokens, type SamplingConfig } from '@kiln/sampling';
import { readEngineDirConfig, type EngineDirConfig } from './engine-config';
import { checkLoadedEngine } from './engine-checks';
import {
  checkPromptIds,
  Executor,
  RETIRE,
  type ExecutorFinishReason,
  type ExecutorResult,
  type ExecutorSequence,
  type ExecutorTokenLogprobs,
  type RequestStats,
} from './executor';

export interface EngineLoadOptions {
  /** Threads for the kernels. Default: the machine's hardware concurrency. Range: 1 to 1024. */
  numThreads?: number;
  /**
   * KV cache capacity in tokens, rounded up to whole blocks. Default (none of the three KV options
   * given): maxBatchSize x maxSeqLen of the engine (every sequence can reach its full length), on a cuda
   * engine at most 0.9 of the device memory free after loading. Range: at least 1. With kvCacheBytes or
   * kvCacheMemoryFraction too, the smallest capacity wins; any of them given replaces the default.
   */
  kvCacheTokens?: number;
  /**
   * KV cache capacity in bytes (K and V of every layer, in the engine's `info.activationDType`: float32
   * on the CPU). Default: not set (see kvCacheTokens). Range: at least 1.
   */
  kvCacheBytes?: number;
  /**
   * KV cache capacity as a fraction of the memory available once weights and activations are loaded:
   * the host's available memory for a cpu engine, the free device memory for a cuda engine (TensorRT-LLM's
   * `kv_cache_free_gpu_mem_fraction`; `kiln --kv-cache-free-gpu-memory-fraction`). Default: not set (see
   * kvCacheTokens for the capacity when none is given). Range: (0, 1].
   */
  kvCacheMemoryFraction?: number;
  /** Most sequences per executor step. Default: the engine's maxBatchSize. Range: 1 to that. */
  maxBatchSize?: number;
  /** Most packed tokens per executor step (longer prompts are prefilled in chunks). Default: the engine's maxNumTokens. Range: 1 to that. */
  maxNumTokens?: number;
  /**
   * `guaranteedNoEvict` (default): admit a request only when the KV blocks of its prompt and all its
   * maxTokens are free. `maxUtilization`: admit on the prompt's blocks, preempting (and later
   * recomputing) the most recently admitted request when blocks run out.
   */
  capacitySchedulerPolicy?: CapacitySchedulerPolicy;
  /** Reuse the KV blocks of shared prompt prefixes. Default true; false turns it off. */
  enableBlockReuse?: boolean;
}

/** What the native loader reports of a loaded engine (`Engine.info`). */
export type EngineInfo = NativeEngineInfo;

/** How a generation ended: "eos", "stop", "length" or "cancelled" (ExecutorFinishReason documents each). */
export type FinishReason = Exclude<ExecutorFinishReason, 'error'>;

export interface EngineGenerateOptions extends SamplingConfig {
  /**
   * Tokens to generate at most, a positive integer; no default. When the prompt plus `maxTokens` would
   * pass the engine's maxSeqLen, generation stops at maxSeqLen with finish reason "length".
   */
  maxTokens: number;
  /**
   * Return the logits of every prompt position, `[promptLength, vocabSize]`. Default false. Needs an
   * engine built with `gatherContextLogits`.
   */
  returnContextLogits?: boolean;
  /** Return the logits that chose each generated token, `[outputIds.length, vocabSize]`. Default false. */
  returnGenerationLogits?: boolean;
  /**
   * Called with each generated token as soon as it is sampled, in order, before the promise resolves.
   * Default: none. If it throws, generation still completes and `generate` rejects with that error.
   */
  onToken?: (tokenId: number) => void;
  /**
   * Cancels the request when aborted, before or during the call alike: it resolves with finish reason
   * "cancelled" and the tokens generated so far (none when aborted before), never an AbortError; the
   * request's KV blocks are free when it resolves. The rule of every entry point: docs/cancellation.md.
   * Default: none.
   */
  signal?: AbortSignal;
}

export interface EngineGenerateResult {
  /** Generated tokens only, not the prompt; ends with the end id when `finishReason` is "eos". */
  outputIds: number[];
  finishReason: FinishReason;
  /** Queue time, time to first token, time per output token, token counts, reused prefix blocks: always set. */
  stats: RequestStats;
  /** With `logprobs`: one `{logprob, top}` per output id. */
  logprobs?: ExecutorTokenLogprobs[];
  /** With numReturnSequences > 1 or beam search: the returned sequences (best first for beams). */
  sequences?: ExecutorSequence[];
  /** Row-major `[promptLength, vocabSize]`, when asked for. */
  contextLogits?: Float32Array;
  /** Row-major `[outputIds.length, vocabSize]`; row k is the distribution that chose output token k. */
  generationLogits?: Float32Array;
  vocabSize: number;
}

function checkPositiveInteger(name: string, value: number | undefined): void {
  if (value !== undefined && (!Number.isSafeInteger(value) || value < 1)) {
    throw new Error(`${name} must be a positive integer, got ${value}`);
  }
}

function checkFraction(name: string, value: number | undefined): void {
  if (value !== undefined && !(typeof value === 'number' && value > 0 && value <= 1)) {
    throw new Error(`${name} must be a number in (0, 1], got ${value}`);
  }
}

/**
 * A compiled engine loaded into the native runtime: one engine directory (`config.json` and its
 * `.engine` file). Owns native memory: call `dispose()` (or `await using`) when done.
 */
export class Engine {
  readonly engineDir: string;
  readonly config: EngineDirConfig;
  /**
   * What the native loader made of it: backend ("cpu" or "cuda"), `device` (a one-line description of
   * where it runs), `activationDType`, `weightBytes`, the KV cache's `kvCacheBytes` and `kvCacheTokens`,
   * and the engine's limits.
   */
  readonly info: EngineInfo;
  #native: NativeEngine | undefined;
  #executor: Executor | undefined;
  #disposed: Promise<void> | undefined;

  private constructor(engineDir: string, config: EngineDirConfig, native: NativeEngine) {
    this.engineDir = engineDir;
    this.config = config;
    this.info = native.info;
    this.mapping = native.mapping;
    this.#native = native;
  }

  /**
   * Loads `<engineDir>/config.json` and its engine file. The native loader checks the file's checksum,
   * format version and target on a native thread (a cuda engine needs an addon built with CUDA and a
   * device), and its message names the file.
   */
  static async load(engineDir: string, options: EngineLoadOptions = {}): Promise<Engine> {
    checkPositiveInteger('numThreads', options.numThreads);
    checkPositiveInteger('kvCacheTokens', options.kvCacheTokens);
    const directory = path.resolve(engineDir);
    const config = await readEngineDirConfig(directory);
    checkPositiveInteger('kvCacheBytes', options.kvCacheBytes);
    checkFraction('kvCacheMemoryFraction', options.kvCacheMemoryFraction);
    checkPositiveInteger('maxBatchSize', options.maxBatchSize);
    checkPositiveInteger('maxNumTokens', options.maxNumTokens);
    const rank = rankToLoad(directory, config.engineFiles.length);
    const native = await loadNative().loadEngine(path.join(directory, config.engineFiles[rank]), {
      numThreads: options.numThreads,
      kvCacheTokens: options.kvCacheTokens,
      kvCacheBytes: options.kvCacheBytes,
      kvCacheMemoryFraction: options.kvCacheMemoryFraction,
      maxBatchSize: options.maxBatchSize,
      maxNumTokens: options.maxNumTokens,
      capacitySchedulerPolicy: options.capacitySchedulerPolicy,
      enableBlockReuse: options.enableBlockReuse,
    });
    checkLoadedEngine(directory, config, native);
    return new Engine(directory, config, native);
  }

  /**
   * This process's rank of a tensor/pipeline-parallel engine (`kiln convert --tp-size/--pp-size`, run
   * under `mpirun -n <tpSize * ppSize>`): rank = ppRank * tpSize + tpRank; tpSize = ppSize = 1, rank 0
   * for an ordinary engine. Rank 0 owns the executor; the other ranks call `follow()`.
   */
  readonly mapping: { tpSize: number; ppSize: number; rank: number };

  /**
   * Ranks other than 0 of a tp/pp engine: runs every step rank 0's executor schedules (rank 0 announces
   * each one; sampling happens on rank 0 only) until rank 0's engine is disposed, then resolves. Runs on a
   * native thread. Rejects on rank 0 and on single-rank engines, which have nothing to follow.
   */
  async follow(): Promise<void> {
    const native = this.#native;
    if (!native) throw new Error(`the engine of ${this.engineDir} has been disposed`);
    if (this.mapping.rank === 0) throw new Error(`${this.engineDir}: rank 0 runs the executor; only the other ranks of a tp/pp engine follow it`);
    await native.follow();
  }

  /** The engine's in-flight batching executor (one per engine): enqueue, stream, cancel, stats. */
  get executor(): Executor {
    const native = this.#native;
    if (!native) throw new Error(`the engine of ${this.engineDir} has been disposed`);
    if (this.mapping.rank !== 0) {
      throw new Error(`${this.engineDir}: this process is rank ${this.mapping.rank}, which follows rank 0's executor (call follow())`);
    }
    this.#executor ??= new Executor(native, this.#facts());
    return this.#executor;
  }

  /** The largest beamWidth a request may ask for (`kiln build --max-beam-width`; 1 without beam search). */
  get maxBeamWidth(): number {
    return this.info.maxBeamWidth ?? 1;
  }

  #facts() {
    return {
      engineDir: this.engineDir,
      vocabSize: this.vocabSize,
      maxSeqLen: this.maxSeqLen,
      defaultEndId: this.defaultEndId,
      gathersContextLogits: this.gathersContextLogits,
      maxBeamWidth: this.maxBeamWidth,
    };
  }

  get vocabSize(): number {
    return this.info.vocabSize;
  }

  get maxSeqLen(): number {
    return this.info.maxSeqLen;
  }

  /** The model's end-of-sequence id (the first of its generation config's `eos_token_id`), if any. */
  get defaultEndId(): number | undefined {
    return this.config.checkpoint.generation.eosTokenIds[0];
  }

  /** Whether the engine was built to return context logits (`gatherContextLogits`). */
  get gathersContextLogits(): boolean {
    return this.config.buildConfig.gatherContextLogits === true;
  }

  /**
   * Runs one request to completion on the executor (prefill of `inputIds`, then decoding with the
   * request's sampling options, greedy by default), batched with the other requests in flight.
   */
  async generate(inputIds: readonly number[] | Int32Array, options: EngineGenerateOptions): Promise<EngineGenerateResult> {
    const executor = this.executor;  // throws once disposed
    const { onToken, signal, ...sampling } = options;
    validateMaxTokens(options.maxTokens);
    resolveEndId(options, this.defaultEndId, this.vocabSize);
    const prompt = checkPromptIds(inputIds, this.#facts());
    if (options.returnContextLogits && !this.gathersContextLogits) {
      throw new Error(
        `returnContextLogits needs an engine built with gatherContextLogits, and ${path.join(this.engineDir, 'config.json')} ` +
          'says buildConfig.gatherContextLogits is not true: rebuild it with `kiln build --gather-context-logits`',
      );
    }
    const request = { ...sampling, inputIds: prompt };
    let result: ExecutorResult;
    let callbackError: unknown;
    const callback = (tokenId: number): void => {
      // A throwing callback does not stop the generation; the first error is reported at the end.
      if (callbackError !== undefined || !onToken) return;
      try {
        onToken(tokenId);
      } catch (error) {
        callbackError = error ?? new Error('onToken threw');
      }
    };
    // Every request goes through the executor's stream, so that a signal, dispose() and the finish
    // reasons follow the same rule as the executor's and the LLM's.
    if ((options.numReturnSequences ?? 1) > 1 && (options.beamWidth ?? 1) === 1) {
      result = await executor.generate(request, { signal });
      result.outputIds.forEach(callback);
    } else {
      const outputIds: number[] = [];
      const logprobs: ExecutorTokenLogprobs[] = [];
      const generationLogits: Float32Array[] = [];
      let contextLogits: Float32Array | undefined;
      let last;
      for await (const event of executor.stream(request, { signal })) {
        outputIds.push(...event.outputIds);
        event.outputIds.forEach(callback);
        if (event.logprobs) logprobs.push(...event.logprobs);
        if (event.contextLogits) contextLogits = event.contextLogits;
        if (event.generationLogits) generationLogits.push(event.generationLogits);
        last = event;
      }
      if (last?.finishReason === undefined || last.finishReason === 'error' || !last.stats) throw new Error('the request ended without a finish reason');
      result = {
        outputIds: last.sequences ? last.outputIds : outputIds,
        finishReason: last.finishReason,
        contextLogits: options.returnContextLogits ? (contextLogits ?? new Float32Array(0)) : undefined,
        generationLogits: options.returnGenerationLogits ? concatRows(generationLogits) : undefined,
        logprobs: options.logprobs !== undefined ? logprobs : undefined,
        sequences: last.sequences,
        stats: last.stats,
      };
    }
    if (callbackError !== undefined) throw callbackError;
    return {
      outputIds: result.outputIds,
      finishReason: result.finishReason,
      stats: result.stats,
      contextLogits: result.contextLogits,
      generationLogits: result.generationLogits,
      logprobs: result.logprobs,
      sequences: result.sequences,
      vocabSize: this.vocabSize,
    };
  }

  /**
   * Cancels the requests queued and running (their calls end with finish reason "cancelled"), waits
   * until they have left the executor and freed their KV blocks, then frees the engine's native memory
   * (weights mapping, KV cache, activations). New calls fail at once. Idempotent: every call returns the
   * same promise, which never rejects. `executor.stats()` then reports the state at that point.
   */
  dispose(): Promise<void> {
    if (this.#disposed) return this.#disposed;
    const native = this.#native;
    this.#native = undefined;
    const executor = this.#executor;
    this.#disposed = (async () => {
      if (!native) return;
      try {
        await native.shutdown({ cancel: true });
        executor?.[RETIRE](native.stats());
      } catch {
        // Already stopped: nothing is running.
      } finally {
        native.dispose();
      }
    })();
    return this.#disposed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

/**
 * Which engine file this process loads: its mpirun rank for a tp/pp engine (whose files are listed by
 * rank), file 0 for a single-rank engine. A world that does not match the engine is refused here with
 * the command that runs it.
 */
function rankToLoad(engineDir: string, ranks: number): number {
  const world = loadNative().worldInfo();
  if (ranks > 1) {
    if (!world.mpiCompiled) {
      throw new Error(`${engineDir}: a tensor/pipeline-parallel engine of ${ranks} ranks, but this build of @kiln/native has no MPI: install Open MPI (Debian: openmpi-bin libopenmpi-dev) and rebuild it (npm run build:native)`);
    }
    if (world.size !== ranks) {
      const where = world.launchedByMpirun ? `mpirun started ${world.size} ranks` : 'this process was not launched by mpirun';
      throw new Error(`${engineDir}: a tensor/pipeline-parallel engine of ${ranks} ranks, but ${where}: run it with \`mpirun -n ${ranks} ...\``);
    }
    return world.rank;
  }
  if (world.size > 1) {
    throw new Error(`${engineDir}: a single-rank engine, but mpirun started ${world.size} ranks: run it without mpirun, or convert the model with --tp-size/--pp-size`);
  }
  return 0;
}

function concatRows(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, part) => n + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
