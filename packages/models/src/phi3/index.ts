// Phi-3: LLaMA with fused qkv_proj and gate_up_proj weights.
import { registerArchitecture } from '../registry';
import { decoderArchitecture } from '../common/architecture';
import { phi3CheckpointTensors } from './checkpoint';
import { parsePhi3Config } from './config';
import { buildPhi3Network } from './network';

registerArchitecture(
  decoderArchitecture({
    name: 'Phi3ForCausalLM',
    family: 'phi3',
    parseConfig: parsePhi3Config,
    checkpointTensors: phi3CheckpointTensors,
    ignoredTensors: [/^lm_head\.weight$/],
    buildNetwork: buildPhi3Network,
  }),
);
