// Gemma 2: Gemma with sandwich norms, soft-capping and alternating sliding-window attention.
import { registerArchitecture } from '../registry';
import { decoderArchitecture } from '../common/architecture';
import { gemma2CheckpointTensors } from './checkpoint';
import { parseGemma2Config } from './config';
import { buildGemma2Network } from './network';

registerArchitecture(
  decoderArchitecture({
    name: 'Gemma2ForCausalLM',
    family: 'gemma2',
    parseConfig: parseGemma2Config,
    checkpointTensors: gemma2CheckpointTensors,
    ignoredTensors: [/^lm_head\.weight$/],
    buildNetwork: buildGemma2Network,
  }),
);
