// GPTBigCode (SantaCoder/StarCoder): multi-query attention, learned positions.
import { registerArchitecture } from '../registry';
import { decoderArchitecture } from '../common/architecture';
import { gptbigcodeCheckpointTensors } from './checkpoint';
import { parseGptBigCodeConfig } from './config';
import { buildGptBigCodeNetwork } from './network';

registerArchitecture(
  decoderArchitecture({
    name: 'GPTBigCodeForCausalLM',
    family: 'gpt_bigcode',
    parseConfig: parseGptBigCodeConfig,
    checkpointTensors: gptbigcodeCheckpointTensors,
    ignoredTensors: [/^lm_head\.weight$/],
    buildNetwork: buildGptBigCodeNetwork,
  }),
);
