import type { Network } from '@kiln/core';
import { DecoderConfig, buildDecoderNetwork } from '../common/decoder';

/** Phi-1/1.5/2: the shared decoder with the switches config.ts sets. */
export function buildPhiNetwork(config: DecoderConfig): Network {
  return buildDecoderNetwork(config, 'phi');
}
