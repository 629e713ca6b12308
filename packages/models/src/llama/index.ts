// The LLaMA family: Llama 1/2/3 (incl. llama3 RoPE scaling), Mistral (sliding window), Qwen2 (q/k/v
// biases, tied embeddings). One network, three ways of reading the HF config.
import { registerArchitecture } from '../registry';
import type { ArchitectureDefinition } from '../types';
import { llamaCheckpointTensors } from './checkpoint';
import { LlamaConfig, LlamaVariant, parseLlamaConfig } from './config';
import { buildLlamaNetwork } from './network';

export type { LlamaConfig } from './config';
export { buildLlamaNetwork } from './network';

function llamaArchitecture(name: string, variant: LlamaVariant): ArchitectureDefinition<LlamaConfig> {
  return {
    name,
    family: 'llama',
    parseConfig: (config, file) => parseLlamaConfig(config, file, variant),
    checkpointTensors: llamaCheckpointTensors,
    // A tied model may still ship lm_head.weight (a copy of the embedding); rotary tables are recomputed.
    ignoredTensors: [/^lm_head\.weight$/, /\.rotary_emb\.inv_freq$/],
    buildNetwork: buildLlamaNetwork,
  };
}

// transformers' defaults: LlamaConfig rms_norm_eps 1e-6, MistralConfig 1e-6, Qwen2Config 1e-6.
registerArchitecture(llamaArchitecture('LlamaForCausalLM', { slidingWindow: 'none', defaultRmsNormEps: 1e-6 }));
registerArchitecture(llamaArchitecture('MistralForCausalLM', { slidingWindow: 'all-layers', defaultRmsNormEps: 1e-6 }));
registerArchitecture(
  llamaArchitecture('Qwen2ForCausalLM', { slidingWindow: 'qwen2', qkvBiasAlways: true, defaultRmsNormEps: 1e-6 }),
);
