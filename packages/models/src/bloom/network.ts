import type { Network } from '@kiln/core';
import { DecoderConfig, buildDecoderNetwork } from '../common/decoder';

/** BLOOM: the shared decoder with the switches config.ts sets. */
export function buildBloomNetwork(config: DecoderConfig): Network {
  return buildDecoderNetwork(config, 'bloom');
}
