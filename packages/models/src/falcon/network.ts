import type { Network } from '@kiln/core';
import { DecoderConfig, buildDecoderNetwork } from '../common/decoder';

/** Falcon: the shared decoder with the switches config.ts sets. */
export function buildFalconNetwork(config: DecoderConfig): Network {
  return buildDecoderNetwork(config, 'falcon');
}
