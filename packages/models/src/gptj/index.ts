// GPT-J: parallel attention and MLP, rotate-every-two partial RoPE, LM head bias.
import { registerArchitecture } from '../registry';
import { decoderArchitecture } from '../common/architecture';
import { gptjCheckpointTensors } from './checkpoint';
import { parseGptjConfig } from './config';
import { buildGptjNetwork } from './network';

registerArchitecture(
  decoderArchitecture({
    name: 'GPTJForCausalLM',
    family: 'gptj',
    parseConfig: parseGptjConfig,
    checkpointTensors: gptjCheckpointTensors,
    ignoredTensors: [/^lm_head\.weight$/],
    buildNetwork: buildGptjNetwork,
  }),
);
