// Qwen3: LLaMA with per-head q/k RMSNorm and an explicit head_dim.
import { registerArchitecture } from '../registry';
import { decoderArchitecture } from '../common/architecture';
import { qwen3CheckpointTensors } from './checkpoint';
import { parseQwen3Config } from './config';
import { buildQwen3Network } from './network';

registerArchitecture(
  decoderArchitecture({
    name: 'Qwen3ForCausalLM',
    family: 'qwen3',
    parseConfig: parseQwen3Config,
    checkpointTensors: qwen3CheckpointTensors,
    ignoredTensors: [/^lm_head\.weight$/],
    buildNetwork: buildQwen3Network,
  }),
);
