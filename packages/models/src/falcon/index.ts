// Falcon: multi-query (or grouped) attention, parallel attention and MLP, RoPE.
import { registerArchitecture } from '../registry';
import { decoderArchitecture } from '../common/architecture';
import { falconCheckpointTensors } from './checkpoint';
import { parseFalconConfig } from './config';
import { buildFalconNetwork } from './network';

registerArchitecture(
  decoderArchitecture({
    name: 'FalconForCausalLM',
    family: 'falcon',
    parseConfig: parseFalconConfig,
    checkpointTensors: falconCheckpointTensors,
    ignoredTensors: [/^lm_head\.weight$/],
    buildNetwork: buildFalconNetwork,
  }),
);
