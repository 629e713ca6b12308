// BLOOM: ALiBi positions, embedding LayerNorm, per-head interleaved fused qkv.
import { registerArchitecture } from '../registry';
import { decoderArchitecture } from '../common/architecture';
import { bloomCheckpointTensors } from './checkpoint';
import { parseBloomConfig } from './config';
import { buildBloomNetwork } from './network';

registerArchitecture(
  decoderArchitecture({
    name: 'BloomForCausalLM',
    family: 'bloom',
    parseConfig: parseBloomConfig,
    checkpointTensors: bloomCheckpointTensors,
    ignoredTensors: [/^lm_head\.weight$/],
    buildNetwork: buildBloomNetwork,
  }),
);
