import type { Network } from '@kiln/core';
import { DecoderConfig, buildDecoderNetwork } from '../common/decoder';

/** Phi-3: the shared decoder with the switches config.ts sets. */
export function buildPhi3Network(config: DecoderConfig): Network {
  return buildDecoderNetwork(config, 'phi3');
}
