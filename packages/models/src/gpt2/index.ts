// GPT-2: learned positions, Conv1D weights, fused c_attn.
import { registerArchitecture } from '../registry';
import { decoderArchitecture } from '../common/architecture';
import { gpt2CheckpointTensors } from './checkpoint';
import { parseGpt2Config } from './config';
import { buildGpt2Network } from './network';

registerArchitecture(
  decoderArchitecture({
    name: 'GPT2LMHeadModel',
    family: 'gpt2',
    parseConfig: parseGpt2Config,
    checkpointTensors: gpt2CheckpointTensors,
    ignoredTensors: [/^lm_head\.weight$/],
    buildNetwork: buildGpt2Network,
  }),
);
