// GPT-NeoX / Pythia: parallel residual, partial RoPE, per-head interleaved fused qkv.
import { registerArchitecture } from '../registry';
import { decoderArchitecture } from '../common/architecture';
import { gptneoxCheckpointTensors } from './checkpoint';
import { parseGptNeoxConfig } from './config';
import { buildGptNeoxNetwork } from './network';

registerArchitecture(
  decoderArchitecture({
    name: 'GPTNeoXForCausalLM',
    family: 'gpt_neox',
    parseConfig: parseGptNeoxConfig,
    checkpointTensors: gptneoxCheckpointTensors,
    ignoredTensors: [/^embed_out\.weight$/],
    buildNetwork: buildGptNeoxNetwork,
  }),
);
