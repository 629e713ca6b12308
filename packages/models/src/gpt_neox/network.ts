import type { Network } from '@kiln/core';
import { DecoderConfig, buildDecoderNetwork } from '../common/decoder';

/** GPT-NeoX / Pythia: the shared decoder with the switches config.ts sets. */
export function buildGptNeoxNetwork(config: DecoderConfig): Network {
  return buildDecoderNetwork(config, 'gpt_neox');
}
