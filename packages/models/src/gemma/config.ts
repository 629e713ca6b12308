import { parseLlamaConfig } from '../llama/config';
import { HfConfig, optionalBoolean, optionalString } from '../hf-config';
import type { DecoderConfig } from '../common/decoder';
import { decoderFromLlama } from '../common/llama-like';
import { Activation, parseActivation } from '../common/activation';

/**
 * What Gemma 1 and 2 share on top of LLaMA: a gated MLP whose activation is `hidden_activation` (newer
 * configs) or `hidden_act` (default tanh GELU: GeGLU), RMSNorm scaling by (1 + w), token embeddings
 * multiplied by sqrt(hidden_size) (a float32 constant, as transformers makes it in the activation dtype),
 * and tied embeddings by default.
 */
export function parseGemmaBase(config: HfConfig, file: string): { decoder: DecoderConfig; activation: Activation } {
  const key = config.hidden_activation != null ? 'hidden_activation' : 'hidden_act';
  const activation = parseActivation(optionalString(config, key, file, 'gelu_pytorch_tanh'), key, file);
  // The llama parser only knows SiLU; the activation is read above and the rest is LLaMA's.
  const { hidden_act: _act, hidden_activation: _activation, ...llamaKeys } = config;
  const llama = parseLlamaConfig(
    { ...llamaKeys, tie_word_embeddings: optionalBoolean(config, 'tie_word_embeddings', file, true) },
    file,
    { slidingWindow: 'none', defaultRmsNormEps: 1e-6 },
  );
  const decoder = decoderFromLlama(llama);
  return {
    activation,
    decoder: {
      ...decoder,
      norm: { kind: 'rms', eps: llama.rmsNormEps, weightOffset: 1 },
      embeddingScale: Math.fround(Math.sqrt(llama.hiddenSize)),
      mlp: { kind: 'gated', activation, intermediateSize: llama.intermediateSize, bias: false },
    },
  };
}

export function parseGemmaConfig(config: HfConfig, file: string): DecoderConfig {
  return parseGemmaBase(config, file).decoder;
}
