// Starcoder2: LayerNorm with biases, GQA, RoPE, non-gated MLP.
import { registerArchitecture } from '../registry';
import { decoderArchitecture } from '../common/architecture';
import { starcoder2CheckpointTensors } from './checkpoint';
import { parseStarcoder2Config } from './config';
import { buildStarcoder2Network } from './network';

registerArchitecture(
  decoderArchitecture({
    name: 'Starcoder2ForCausalLM',
    family: 'starcoder2',
    parseConfig: parseStarcoder2Config,
    checkpointTensors: starcoder2CheckpointTensors,
    ignoredTensors: [/^lm_head\.weight$/],
    buildNetwork: buildStarcoder2Network,
  }),
);
