import type { Network } from '@kiln/core';
import { DecoderConfig, buildDecoderNetwork } from '../common/decoder';

/** GPTBigCode (SantaCoder, StarCoder): the shared decoder with the switches config.ts sets. */
export function buildGptBigCodeNetwork(config: DecoderConfig): Network {
  return buildDecoderNetwork(config, 'gpt_bigcode');
}
