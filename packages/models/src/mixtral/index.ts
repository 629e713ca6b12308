// Mixtral: Mistral with a top-k routed mixture of SwiGLU experts.
import { registerArchitecture } from '../registry';
import { decoderArchitecture } from '../common/architecture';
import { mixtralCheckpointTensors } from './checkpoint';
import { parseMixtralConfig } from './config';
import { buildMixtralNetwork } from './network';

registerArchitecture(
  decoderArchitecture({
    name: 'MixtralForCausalLM',
    family: 'mixtral',
    parseConfig: parseMixtralConfig,
    checkpointTensors: mixtralCheckpointTensors,
    ignoredTensors: [/^lm_head\.weight$/],
    buildNetwork: buildMixtralNetwork,
  }),
);
