import type { QuantizationErrorReport, WeightDType } from '@kiln/native';

/** The build settings every target shares. */
export interface BuildConfigCommon {
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
  /**
   * The engine's weight dtype: "float32", "float16" or "bfloat16". Matrix, embedding and norm weights are
   * cast to it when packed (round to nearest even); biases and constants the builder computes (RoPE
   * frequencies, ALiBi slopes) stay float32. On cuda it is also the dtype of the KV cache and of the
   * activations that GEMMs read (the rest stay float32: activation-dtypes.ts), with float32 accumulation;
   * the CPU computes in float32 whatever the weights.
   * Default: the checkpoint's dtype.
   */
  dtype: WeightDType;
}

/** An engine for the CPU (the default target): runs on any x86-64 the `isa` allows. */
export interface CpuBuildConfig extends BuildConfigCommon {
  /** Default "cpu". */
  target: 'cpu';
  /**
   * The minimum instruction set the engine needs. Default: "avx2" where this CPU has it, else "generic".
   * At load the CPU backend runs the best kernel set the CPU has above it (AVX-512, AVX512_BF16), capped by
   * the KILN_CPU_ISA environment variable (decision 0012).
   */
  isa: 'avx2' | 'generic';
  /**
   * Weight-only quantization of the linear matrices (TensorRT-LLM's W8A16): "int8" stores each as int8
   * codes with a float32 scale per output channel (symmetric, max |w| / 127), activations stay 16/32-bit.
   * Embeddings, norms and biases keep `dtype`. Absent: none. The build reports each matrix's error
   * (quantization.json in the engine directory). "int4" (TensorRT-LLM's W4A16, llama.cpp's Q4_0 rule):
   * 4-bit codes with a bfloat16 scale per output channel and group of `groupSize` input features
   * (decision 0014); every linear's input width must be a multiple of the group size. The first
   * transformer layer's linears and the LM head are stored as int8 instead (their errors cost the most).
   * "fp8": FP8 e4m3
   * weights with one scale per matrix and activations quantized per row at run time (decision 0015), the
   * reference of the cuda fp8 engines.
   * "q8_0" stores each matrix whose input width is a multiple of 32 as llama.cpp's Q8_0 blocks (a float16
   * scale per 32 codes) and quantizes each linear's input to the same blocks, multiplying codes in
   * integers, as llama.cpp's CPU runs Q8_0 and Q4_0 weights; attention then rounds as over llama.cpp's
   * float16 KV cache, and rope angles are llama.cpp's (decision 0016). The values of a GGUF file's Q8_0
   * and Q4_0 tensors (imported as float32) are kept exactly. Other matrices keep `dtype`.
   */
  quantization?: 'int8' | 'int4' | 'fp8' | 'q8_0';
  /** int4 only: input features per scale, a multiple of 32 (default 32 on the CPU, 128 on cuda). */
  groupSize?: number;
  /**
   * bfloat16 engines only: linears read their input rounded to bfloat16, as cuda engines store it, so
   * CPUs with AVX512_BF16 multiply bfloat16 pairs at twice the float32 rate (prefill). Logits then differ
   * from a float32-activation reference by ~1e-3 relative instead of ~1e-6 (decision 0012). Absent: off.
   */
  bf16LinearInputs?: true;
}

/** An engine for NVIDIA GPUs of one compute capability. */
export interface CudaBuildConfig extends BuildConfigCommon {
  target: 'cuda';
  /**
   * The compute capability to build for, "major.minor" (e.g. "9.0" for H100/H200, "8.0" for A100).
   * Default: device 0's, as `loadNative().cudaInfo()` reports it, else "9.0" (no device visible here).
   */
  computeCapability: string;
  /**
   * Weight-only int8 linears (W8A16, as on the CPU): the decode GEMV streams half the bytes of bfloat16;
   * prefill widens the codes for cuBLASLt. "int4" (W4A16, group `groupSize`): a quarter of the bytes; the
   * same format as on the CPU (decision 0014). "fp8": FP8 e4m3 weights (one float32 scale per matrix) and
   * activations (one dynamic scale per row, computed on the device each call), multiplied by cuBLASLt's
   * FP8 GEMM on sm_90 or an FP8 GEMV for decode rows (decision 0015). Absent: none.
   */
  quantization?: 'int8' | 'int4' | 'fp8';
  /** int4 only: input features per scale, a multiple of 32 (default 128). */
  groupSize?: number;
}

/**
 * Build settings of an engine: one of the targets' configs, told apart by `target`. Every field is
 * optional in `BuildOptions.config`; defaults on each field.
 */
export type BuildConfig = CpuBuildConfig | CudaBuildConfig;

/** Where an engine runs: "cpu" (default) or "cuda". */
export type BuildTarget = BuildConfig['target'];

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
  /** Quantized builds: each int8 or int4 matrix's error against its float weights (also in quantization.json). */
  quantization?: QuantizationErrorReport[];
  /** int4 builds: the matrices kept at int8, the first layer's and the LM head (decision 0014; also in quantization.json). */
  int8Weights?: string[];
  /** True when an existing engine with the same build hash was reused. */
  cached: boolean;
  buildHash: string;
  config: BuildConfig;
}
