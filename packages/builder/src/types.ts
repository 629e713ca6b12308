/** Build settings of an engine. Every field is optional in `BuildOptions.config`; defaults below. */
export interface BuildConfig {
  /** Most sequences in one step. Default 8; 1 to 4096. */
  maxBatchSize: number;
  /** Most positions (prompt + generated) of one sequence. Default: the model's maxPositionEmbeddings, capped at 4096. */
  maxSeqLen: number;
  /** Most packed tokens in one step (prefill chunk size). Default: min(maxSeqLen, 2048). */
  maxNumTokens: number;
  /**
   * Let the LM head compute a row for every prompt token, so `returnContextLogits` works (as
   * TensorRT-LLM's `--gather_context_logits`). Costs maxNumTokens x vocab floats of memory. Default false.
   */
  gatherContextLogits: boolean;
  /**
   * Most beams of one beam search request (`beamWidth`), recorded in the engine header's limits. The
   * executor schedules a request's beams as that many sequences of a step, so it is at most
   * maxBatchSize. Default 1 (no beam search); 1 to maxBatchSize.
   */
  maxBeamWidth: number;
  /** Tokens per KV cache block. Default 16; 1 to 1024. */
  tokensPerBlock: number;
  /** Instruction set to compile for. Default: the best this CPU supports ("avx2" or "generic"). */
  isa: 'avx2' | 'generic';
}

export interface BuildProgress {
  stage: 'load' | 'passes' | 'lower' | 'plan' | 'write';
  message: string;
}

export interface BuildOptions {
  /** A Kiln checkpoint directory (output of @kiln/convert). */
  checkpointDir: string;
  /** The engine directory to create (replaced atomically). */
  outputDir: string;
  config?: Partial<BuildConfig>;
  /** Rebuild even if `outputDir` already holds an engine with the same build hash. Default false. */
  force?: boolean;
  onProgress?: (progress: BuildProgress) => void;
}

export interface BuildResult {
  engineDir: string;
  /** True when an existing engine with the same build hash was reused. */
  cached: boolean;
  buildHash: string;
  config: BuildConfig;
}
