// Phi-1/1.5/2: parallel attention and MLP over one LayerNorm, partial RoPE, biases.
import { registerArchitecture } from '../registry';
import { decoderArchitecture } from '../common/architecture';
import { phiCheckpointTensors } from './checkpoint';
import { parsePhiConfig } from './config';
import { buildPhiNetwork } from './network';

registerArchitecture(
  decoderArchitecture({
    name: 'PhiForCausalLM',
    family: 'phi',
    parseConfig: parsePhiConfig,
    checkpointTensors: phiCheckpointTensors,
    ignoredTensors: [/^lm_head\.weight$/],
    buildNetwork: buildPhiNetwork,
  }),
);
