// OPT: learned positions with offset 2, ReLU MLP.
import { registerArchitecture } from '../registry';
import { decoderArchitecture } from '../common/architecture';
import { optCheckpointTensors } from './checkpoint';
import { parseOptConfig } from './config';
import { buildOptNetwork } from './network';

registerArchitecture(
  decoderArchitecture({
    name: 'OPTForCausalLM',
    family: 'opt',
    parseConfig: parseOptConfig,
    checkpointTensors: optCheckpointTensors,
    ignoredTensors: [/^lm_head\.weight$/],
    buildNetwork: buildOptNetwork,
  }),
);
