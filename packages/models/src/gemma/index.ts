// Gemma: LLaMA with GeGLU, (1 + w) RMSNorm and a sqrt(hidden) embedding scale.
import { registerArchitecture } from '../registry';
import { decoderArchitecture } from '../common/architecture';
import { gemmaCheckpointTensors } from './checkpoint';
import { parseGemmaConfig } from './config';
import { buildGemmaNetwork } from './network';

registerArchitecture(
  decoderArchitecture({
    name: 'GemmaForCausalLM',
    family: 'gemma',
    parseConfig: parseGemmaConfig,
    checkpointTensors: gemmaCheckpointTensors,
    ignoredTensors: [/^lm_head\.weight$/],
    buildNetwork: buildGemmaNetwork,
  }),
);
